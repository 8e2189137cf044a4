"""Downloader runners: put a transaction's files in a local directory and hand back openers.

``LocalDownloaderRunner`` copies files from a local tree (the in-process twin);
``RemoteDownloaderRunner`` fetches them through Pacifica cartd: ``POST`` a
cart, ``HEAD`` it until ``X-Pacifica-Status: ready``, ``GET ?filename=data``
as a streamed tar extracted safely into ``<directory>/data/`` (see
``bundles.extract_data_tar``), verify each file's size and hash, then
``DELETE`` the cart. Both return one opener per file, in the order of ``files``.
"""

from __future__ import annotations

import abc
import codecs
import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

import requests

from pacifica.dispatcher.bundles import DATA_DIR, extract_data_tar
from pacifica.dispatcher.compat.clients import downloader_endpoint
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import DownloadError, HashMismatchError
from pacifica.dispatcher.models import File
from pacifica.dispatcher.transfer import RemoteService

logger = logging.getLogger(__name__)

EMPTY_FILES_MESSAGE = "Files should contain something."
CART_FILENAME = DATA_DIR  # cartd names the tar's top directory after ?filename=
DEFAULT_HASHTYPE = "sha1"
_CHUNK = 1 << 20


class Opener(Protocol):
    """Opens the local copy of one downloaded file, like ``open`` (``mode="rb"`` for bytes)."""

    def __call__(self, mode: str = "r", encoding: str | None = None, **kwargs: Any) -> IO[Any]:
        """Open the file; text mode defaults to the file's encoding, else UTF-8."""
        ...


@dataclass(frozen=True)
class FileOpener:
    """The ``Opener`` of a file at ``path``; ``encoding`` is the text-mode default."""

    path: str
    encoding: str | None = None

    def __call__(self, mode: str = "r", encoding: str | None = None, **kwargs: Any) -> IO[Any]:
        """Open the file in ``mode``; binary modes take no encoding.

        Raises:
            OSError: the file cannot be opened.
        """
        if "b" not in mode:
            encoding = encoding or self.encoding or "utf-8"
        return open(self.path, mode, encoding=encoding, **kwargs)


class DownloaderRunner(abc.ABC):
    """Puts a transaction's files in a local directory and returns one opener per file."""

    @abc.abstractmethod
    def download(
        self,
        directory: str | None = None,
        files: Sequence[File] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> list[Opener]:
        """Make ``files`` available under ``directory``; return their openers in the same order.

        ``basedir_name`` is upstream's name for ``directory``.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            ValueError: ``files`` is empty.
            DownloadError: a file cannot be fetched, or fails verification.
            TransferTimeoutError: the files were not ready within ``timeout`` seconds.
        """


def target_directory(directory: str | None, basedir_name: str | None) -> str:
    """The directory a download goes to: ``directory``, or upstream's ``basedir_name``.

    Raises:
        TypeError: neither is given.
    """
    chosen = directory if directory is not None else basedir_name
    if chosen is None:
        raise TypeError("download() needs the directory to download to")
    return chosen


def relative_path(file: File) -> str:
    """The file's normalised POSIX path relative to the transaction root.

    Raises:
        DownloadError: the file has no name, or its path is absolute or climbs out with ``..``.
    """
    try:
        path = file.path.replace("\\", "/")
    except AttributeError as exc:
        raise DownloadError(f"file {file._id!r} has no name") from exc
    normal = posixpath.normpath(path)
    if path.startswith("/") or normal in (".", "..") or normal.startswith("../"):
        raise DownloadError(f"file path {file.path!r} is not inside the transaction")
    return normal


def _text_encoding(name: str | None) -> str | None:
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def _opener(directory: str, relpath: str, file: File) -> FileOpener:
    return FileOpener(os.path.join(directory, *relpath.split("/")), _text_encoding(file.encoding))


def verify_file(path: str, file: File) -> None:
    """Check the local copy at ``path`` against the size and hash in ``file``'s metadata.

    Fields the metadata leaves empty are not checked; a hashsum without a hashtype is sha1.

    Raises:
        DownloadError: the file is missing, or its hashtype is unknown to hashlib.
        HashMismatchError: the size or the checksum differs.
    """
    label = file.path if file.name is not None else path
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DownloadError(f"{label}: not downloaded ({exc})") from exc
    if file.size is not None and size != int(file.size):
        raise HashMismatchError(f"{label}: size {size} differs from metadata size {file.size}")
    if not file.hashsum:
        return
    expected = file.hashsum.rpartition(":")[2].lower()  # ingest accepts "sha1:<hex>"
    hashtype = file.hashtype or DEFAULT_HASHTYPE
    actual = _hexdigest(path, hashtype, label)
    if actual != expected:
        raise HashMismatchError(f"{label}: {hashtype} {actual} differs from metadata {expected}")


def _hexdigest(path: str, hashtype: str, label: str) -> str:
    try:
        digest = hashlib.new(hashtype, usedforsecurity=False)
    except ValueError as exc:
        raise DownloadError(f"{label}: unsupported hashtype {hashtype!r}") from exc
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class LocalDownloaderRunner(DownloaderRunner):
    """Copies files from ``basedir/<path>`` to ``directory/<path>``, or opens them in place."""

    def __init__(self, basedir: str) -> None:
        self.basedir = basedir

    def download(
        self,
        directory: str | None = None,
        files: Sequence[File] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> list[Opener]:
        """Copy (or open in place) each file and verify it; ``timeout`` is not used.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            ValueError: ``files`` is empty.
            DownloadError: a file is missing from ``basedir`` or its path leaves the transaction.
            HashMismatchError: a file's size or checksum differs from its metadata.
        """
        directory = target_directory(directory, basedir_name)
        if not files:
            raise ValueError(EMPTY_FILES_MESSAGE)
        in_place = os.path.realpath(directory) == os.path.realpath(self.basedir)
        openers: list[Opener] = []
        for file in files:
            relpath = relative_path(file)
            opener = _opener(directory, relpath, file)
            if not in_place:
                self._copy(relpath, opener.path)
            verify_file(opener.path, file)
            openers.append(opener)
        return openers

    def _copy(self, relpath: str, target: str) -> None:
        source = os.path.join(self.basedir, *relpath.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            shutil.copy2(source, target)
        except FileNotFoundError as exc:
            raise DownloadError(f"{relpath}: not found in {self.basedir}") from exc
        except OSError as exc:
            raise DownloadError(f"{relpath}: cannot copy from {self.basedir}: {exc}") from exc


class RemoteDownloaderRunner(RemoteService, DownloaderRunner):
    """Downloads files through a Pacifica cartd cart; files land in ``directory/data/<path>``.

    ``cart_url`` is cartd's URL, or an upstream pacifica-downloader ``Downloader``
    whose cart URL and auth are used. Keyword options (auth, timeouts, polling)
    are ``transfer.RemoteService``'s.
    """

    def __init__(self, cart_url: str | Any, **options: Any) -> None:
        if not isinstance(cart_url, str):
            endpoint = downloader_endpoint(cart_url)
            cart_url = endpoint.url
            options.setdefault("requests_options", endpoint.requests_options)
        super().__init__(**options)
        self.cart_url = cart_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteDownloaderRunner:
        """A runner for ``settings.cartd_url`` with its auth, request and transfer timeouts."""
        return cls(cart_url=settings.cartd_url, **cls.options_from(settings))

    def download(
        self,
        directory: str | None = None,
        files: Sequence[File] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> list[Opener]:
        """Fetch ``files`` through a new cart, extract them safely and verify them.

        ``timeout`` (default: the runner's ``default_timeout``) bounds the wait for the
        cart to be ready; every HTTP request also has ``request_timeout``.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            ValueError: ``files`` is empty.
            DownloadError: cartd refuses the cart, reports an error, or cannot be reached.
            TransferTimeoutError: the cart is not ready within ``timeout`` seconds.
            UnsafeArchiveError: a tar member would land outside ``directory/data`` or is a link
                or a special file.
            HashMismatchError: a file's size or checksum differs from its metadata.
        """
        directory = target_directory(directory, basedir_name)
        if not files:
            raise ValueError(EMPTY_FILES_MESSAGE)
        relpaths = [relative_path(file) for file in files]
        wait = self.default_timeout if timeout is None else timeout
        cart = f"{self.cart_url}/{uuid.uuid4()}"
        os.makedirs(directory, exist_ok=True)
        with requests.Session() as session:
            try:
                self._create_cart(session, cart, files, relpaths)
                self._wait_until_ready(session, cart, wait)
                self._fetch(session, cart, directory)
            finally:
                self._delete_cart(session, cart)
        data_dir = os.path.join(directory, CART_FILENAME)
        openers: list[Opener] = []
        for relpath, file in zip(relpaths, files, strict=True):
            opener = _opener(data_dir, relpath, file)
            verify_file(opener.path, file)
            openers.append(opener)
        return openers

    def _request(
        self, session: requests.Session, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        return self.request(session, method, url, DownloadError, **kwargs)

    def _create_cart(
        self, session: requests.Session, cart: str, files: Sequence[File], relpaths: list[str]
    ) -> None:
        fileids = []
        for file, relpath in zip(files, relpaths, strict=True):
            if file._id is None:
                raise DownloadError(f"{relpath}: file has no _id, cartd cannot fetch it")
            fileids.append(
                {
                    "id": file._id,
                    "path": relpath,
                    "hashtype": file.hashtype,
                    "hashsum": file.hashsum,
                }
            )
        response = self._request(session, "POST", cart, json={"fileids": fileids})
        with response:
            if response.status_code != 201:
                raise DownloadError(
                    f"cartd refused cart {cart}: HTTP {response.status_code} {_excerpt(response)}"
                )

    def _wait_until_ready(self, session: requests.Session, cart: str, timeout: float) -> None:
        last: list[str] = [""]

        def ready() -> bool | None:
            with self._request(session, "HEAD", cart) as response:
                status = response.headers.get("X-Pacifica-Status", "")
                message = response.headers.get("X-Pacifica-Message", "")
                code = response.status_code
            if status == "error" or code >= 400:
                raise DownloadError(f"cart {cart} failed: HTTP {code} {status} {message}".strip())
            last[0] = status or str(code)
            return True if code == 204 and status == "ready" else None

        self.poll(ready, timeout, lambda: f"cart {cart} not ready (last status: {last[0]})")

    def _fetch(self, session: requests.Session, cart: str, directory: str) -> None:
        response = self._request(
            session, "GET", cart, params={"filename": CART_FILENAME}, stream=True
        )
        with response:
            if response.status_code != 200:
                raise DownloadError(
                    f"cart {cart} download: HTTP {response.status_code} {_excerpt(response)}"
                )
            # iter_content, not response.raw: it decodes and turns urllib3 errors into requests'.
            stream = _ChunkReader(response.iter_content(_CHUNK))
            try:
                extract_data_tar(cast(IO[bytes], stream), directory)
            except tarfile.TarError as exc:
                raise DownloadError(f"cart {cart} download is not a readable tar: {exc}") from exc
            except OSError as exc:  # requests' errors included
                raise DownloadError(f"cart {cart} download failed: {exc}") from exc

    def _delete_cart(self, session: requests.Session, cart: str) -> None:
        try:
            self._request(session, "DELETE", cart).close()
        except DownloadError:
            logger.warning("could not delete cart %s", cart, exc_info=True)


def _excerpt(response: requests.Response, limit: int = 300) -> str:
    try:
        head = next(response.iter_content(limit), b"")
    except requests.RequestException:
        return ""
    return head[:limit].decode("utf-8", "replace").strip()


class _ChunkReader:
    """A ``read(size)`` view of an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = chunk
        size = len(self._pending) if size < 0 else size
        data, self._pending = self._pending[:size], self._pending[size:]
        return data
