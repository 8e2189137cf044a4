"""Pacifica's data tars: the ingest bundle written here, and cartd's download read safely.

The ingest bundle is a tar of ``data/<relative paths>`` plus a ``metadata.txt`` member.

``metadata.txt`` is a JSON list of records told apart by ``destinationTable``: the
``Transactions.<field>`` records, one ``TransactionKeyValue`` per key/value and
one ``Files`` record per file (name, subdir without the ``data/`` prefix, size,
mimetype, sha1 hashsum, ctime, mtime). Pacifica ingest reads it with
``tarfile`` and counts every member but ``metadata.txt`` as a file, so the
bundle holds regular file members only, no directory members.

``write_bundle`` streams the tar (``w|``, PAX, UTF-8 names) into any writable
binary file object, reading each file once and hashing it as it streams, so
memory stays bounded whatever the file sizes.

A cart download (``GET <cart>?filename=data``) is the same ``data/<path>``
layout without ``metadata.txt``; ``extract_data_tar`` unpacks such a stream
and refuses any member that is not a plain file or directory under ``data/``.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import os
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import IO, Any, NamedTuple

from pacifica.dispatcher.errors import TransactionDuplicateAttributeError, UnsafeArchiveError
from pacifica.dispatcher.models import Transaction, TransactionKeyValue

DATA_DIR = "data"
METADATA_MEMBER = "metadata.txt"
HASHTYPE = "sha1"
DEFAULT_MIMETYPE = "application/octet-stream"
INVALID_METADATA_MESSAGE = "MetaData is not valid yet."
# tarfile's "data" filter exists from Python 3.11.4 / 3.10.12; older 3.10 relies on our checks.
_EXTRACT_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
_FILTER_ERRORS: tuple[type[Exception], ...] = (
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()
)


class BundleContents(NamedTuple):
    """What a bundle holds: the ``metadata.txt`` list and each file's bytes by relative path."""

    metadata: list[dict[str, Any]]
    files: dict[str, bytes]


def transaction_records(
    transaction: Transaction | None, key_values: Iterable[TransactionKeyValue] | None
) -> list[dict[str, Any]]:
    """The ``Transactions.<field>`` and ``TransactionKeyValue`` records of a new upload.

    Raises:
        TransactionDuplicateAttributeError: the transaction carries an ``_id`` (ingest assigns it).
        ValueError: there is no record at all, or a key or value is None or empty
            (upstream's ``'MetaData is not valid yet.'``).
    """
    transaction = transaction or Transaction()
    if transaction._id is not None:
        raise TransactionDuplicateAttributeError(None, "_id")
    records = transaction.to_records()
    records.extend(
        {"destinationTable": "TransactionKeyValue", "key": kv.key, "value": kv.value}
        for kv in key_values or ()
    )
    # Upstream rejects any falsy value; 0 is a valid id, so only None and "" are refused here.
    if not records or any(_has_blank(record) for record in records):
        raise ValueError(INVALID_METADATA_MESSAGE)
    return records


def _has_blank(record: dict[str, Any]) -> bool:
    values = [record["value"], record["key"]] if "key" in record else [record["value"]]
    return any(value is None or value == "" for value in values)


def bundle_paths(directory: str) -> Iterator[str]:
    """Relative POSIX paths of the regular files under ``directory``, in sorted walk order.

    Symbolic links to files are followed (their content is bundled); links to
    directories, sockets and other special files are skipped.

    Raises:
        FileNotFoundError: ``directory`` is not a directory.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        relroot = os.path.relpath(root, directory)
        parts = [] if relroot == os.curdir else relroot.split(os.sep)
        for name in sorted(names):
            if os.path.isfile(os.path.join(root, name)):
                yield posixpath.join(*parts, name)


def write_bundle(
    directory: str,
    transaction: Transaction | None,
    key_values: Iterable[TransactionKeyValue] | None,
    fileobj: IO[bytes],
) -> list[dict[str, Any]]:
    """Stream the bundle of every file under ``directory`` into ``fileobj``; return its metadata.

    ``fileobj`` only needs ``write``; it is neither seeked nor closed.

    Raises:
        TransactionDuplicateAttributeError: the transaction carries an ``_id``.
        ValueError: the transaction metadata is empty or has a blank value.
        FileNotFoundError: ``directory`` is not a directory.
        OSError: a file cannot be read, or shrank while it was being bundled.
    """
    metadata = transaction_records(transaction, key_values)
    latest_mtime = 0
    with tarfile.open(
        fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8"
    ) as tar:
        for relpath in bundle_paths(directory):
            record, mtime = _add_file(tar, directory, relpath)
            metadata.append(record)
            latest_mtime = max(latest_mtime, mtime)
        document = json.dumps(metadata).encode("utf-8")
        info = tarfile.TarInfo(METADATA_MEMBER)
        info.size = len(document)
        # The newest file's mtime rather than "now", so the same tree gives the same bytes.
        info.mtime = latest_mtime
        tar.addfile(info, io.BytesIO(document))
    return metadata


class _HashingReader:
    """A read-only view of a file that hashes every byte handed out."""

    def __init__(self, handle: IO[bytes], digest: Any) -> None:
        self._handle = handle
        self.digest = digest

    def read(self, size: int = -1, /) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def _add_file(tar: tarfile.TarFile, directory: str, relpath: str) -> tuple[dict[str, Any], int]:
    with open(os.path.join(directory, *relpath.split("/")), "rb") as handle:
        stat = os.fstat(handle.fileno())
        info = tarfile.TarInfo(f"{DATA_DIR}/{relpath}")
        info.size = stat.st_size
        info.mtime = int(stat.st_mtime)
        reader = _HashingReader(handle, hashlib.new(HASHTYPE, usedforsecurity=False))
        # addfile copies exactly info.size bytes, so the hash covers what the tar holds.
        tar.addfile(info, reader)
    return _file_record(relpath, info.size, info.mtime, reader.digest.hexdigest()), info.mtime


def _file_record(relpath: str, size: int, mtime: int, hashsum: str) -> dict[str, Any]:
    subdir, name = posixpath.split(relpath)
    # POSIX has no creation time; like upstream's Bundler, ctime repeats mtime.
    # Naive ISO in UTC, the form upstream sends and Pacifica metadata is known to accept.
    stamp = datetime.fromtimestamp(mtime, tz=timezone.utc).replace(tzinfo=None).isoformat()
    return {
        "destinationTable": "Files",
        "name": name,
        "subdir": subdir,
        "size": size,
        "mimetype": mimetypes.guess_type(name)[0] or DEFAULT_MIMETYPE,
        "hashtype": HASHTYPE,
        "hashsum": hashsum,
        "ctime": stamp,
        "mtime": stamp,
    }


def read_bundle(source: str | os.PathLike[str] | IO[bytes]) -> BundleContents:
    """Read a bundle (a path or a readable binary file object) into memory (tests, local ingest).

    Raises:
        ValueError: the tar has no ``metadata.txt`` or it is not a JSON list.
        tarfile.TarError: ``source`` is not a tar.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return _read_tar(handle)
    return _read_tar(source)


def _read_tar(handle: IO[bytes]) -> BundleContents:
    metadata: Any = None
    files: dict[str, bytes] = {}
    prefix = f"{DATA_DIR}/"
    with tarfile.open(fileobj=handle, mode="r|*") as tar:
        for member in tar:
            content = tar.extractfile(member) if member.isfile() else None
            if content is None:
                continue
            if member.name == METADATA_MEMBER:
                metadata = json.loads(content.read().decode("utf-8"))
            elif member.name.startswith(prefix):
                files[member.name[len(prefix) :]] = content.read()
    if not isinstance(metadata, list):
        raise ValueError(f"bundle has no {METADATA_MEMBER} JSON list")
    return BundleContents(metadata, files)


def extract_data_tar(stream: IO[bytes], directory: str) -> None:
    """Extract a streamed ``data/<path>`` tar into ``directory``, refusing anything unsafe.

    Raises:
        UnsafeArchiveError: a member is absolute, climbs out with ``..``, lies outside
            ``data/``, or is a link, a device or a FIFO.
        tarfile.TarError: the stream is not a tar, or ends early.
        OSError: a file cannot be written, or ``stream`` fails.
    """
    root = os.path.realpath(directory)
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            check_member(member, root)
            try:
                # Without the filter (old 3.10) modes and owners are not applied at all.
                tar.extract(member, path=root, set_attrs=bool(_EXTRACT_FILTER), **_EXTRACT_FILTER)
            except _FILTER_ERRORS as exc:
                raise UnsafeArchiveError(f"unsafe tar member {member.name!r}: {exc}") from exc


def check_member(member: tarfile.TarInfo, root: str) -> None:
    """Accept a tar member only if it is a file or directory that lands under ``root/data``.

    Raises:
        UnsafeArchiveError: the member is a link or special file, or its path leaves ``root/data``.
    """
    name = member.name
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"tar member {name!r} is a link or special file")
    if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchiveError(f"tar member {name!r} has an absolute or climbing path")
    data_root = os.path.join(root, DATA_DIR)
    # realpath also resolves links already on disk, so an existing symlink cannot redirect us.
    target = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([data_root, target]) != data_root:
        raise UnsafeArchiveError(f"tar member {name!r} lands outside {DATA_DIR}/")
