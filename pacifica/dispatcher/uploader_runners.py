"""Uploader runners: bundle a directory as a new Pacifica transaction and hand it over.

``LocalUploaderRunner`` writes the bundle to a local directory, or only builds
and validates its metadata (the in-process twin); ``RemoteUploaderRunner``
streams the bundle to a temporary file, POSTs it to Pacifica ingest's
``/upload`` and polls ``/get_state`` until the job has ingested its metadata,
failed, or run out of time. The upstream call shape
``upload(basedir_name, transaction=..., transaction_key_values=..., timeout=...)`` is kept.
"""

from __future__ import annotations

import abc
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import requests

from pacifica.dispatcher.bundles import write_bundle
from pacifica.dispatcher.compat.clients import uploader_endpoint
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import target_directory
from pacifica.dispatcher.errors import UploadError
from pacifica.dispatcher.models import Transaction, TransactionKeyValue
from pacifica.dispatcher.transfer import RemoteService

COMPLETE_TASK = "ingest metadata"
_STATE_KEYS = ("state", "task", "task_percent")


@dataclass(frozen=True)
class UploadResult:
    """What an upload produced: ingest's job id and last state, the bundle metadata, its path.

    It also unpacks as upstream's ``(bundle, job_id, state)`` tuple:
    ``bundle, job_id, state = runner.upload(...)``.
    """

    job_id: int | None = None
    state: dict[str, Any] = field(default_factory=dict)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    bundle_path: str | None = None

    @property
    def bundle(self) -> list[dict[str, Any]]:
        """The bundle's metadata records (upstream's first item was the ``Bundler``)."""
        return self.metadata

    def __iter__(self) -> Iterator[Any]:
        return iter((self.bundle, self.job_id, self.state))


class UploaderRunner(abc.ABC):
    """Bundles a directory with its transaction metadata and submits it."""

    @abc.abstractmethod
    def upload(
        self,
        directory: str | None = None,
        transaction: Transaction | None = None,
        transaction_key_values: Sequence[TransactionKeyValue] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> UploadResult:
        """Bundle every file under ``directory`` as a new transaction and submit it.

        ``basedir_name`` is upstream's name for ``directory``.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            TransactionDuplicateAttributeError: ``transaction`` carries an ``_id``.
            ValueError: the transaction metadata is empty or has a blank value.
            UploadError: the bundle was refused or its ingest job failed.
            TransferTimeoutError: the job did not finish within ``timeout`` seconds.
        """


class LocalUploaderRunner(UploaderRunner):
    """Writes bundles to ``output_dir/<uuid>.tar``; without ``output_dir`` only builds metadata."""

    def __init__(self, output_dir: str | None = None) -> None:
        self.output_dir = output_dir

    def upload(
        self,
        directory: str | None = None,
        transaction: Transaction | None = None,
        transaction_key_values: Sequence[TransactionKeyValue] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> UploadResult:
        """Build the bundle (``timeout`` is not used); ``job_id`` is None and ``state`` empty.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            TransactionDuplicateAttributeError: ``transaction`` carries an ``_id``.
            ValueError: the transaction metadata is empty or has a blank value.
            OSError: a file cannot be read or the bundle cannot be written.
        """
        directory = target_directory(directory, basedir_name)
        if self.output_dir is None:
            with open(os.devnull, "wb") as sink:
                metadata = write_bundle(directory, transaction, transaction_key_values, sink)
            return UploadResult(metadata=metadata)
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, f"{uuid.uuid4()}.tar")
        partial = f"{path}.part"
        try:
            with open(partial, "wb") as handle:
                metadata = write_bundle(directory, transaction, transaction_key_values, handle)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return UploadResult(metadata=metadata, bundle_path=path)


class RemoteUploaderRunner(RemoteService, UploaderRunner):
    """Uploads bundles to Pacifica ingest and waits for the job to finish.

    ``ingest_url`` is ingest's URL, or an upstream pacifica-uploader ``Uploader``
    whose upload and status URLs and auth are used. Keyword options (auth,
    timeouts, polling) are ``transfer.RemoteService``'s.
    """

    def __init__(
        self,
        ingest_url: str | Any,
        *,
        upload_path: str = "/upload",
        status_path: str = "/get_state",
        temp_dir: str | None = None,
        **options: Any,
    ) -> None:
        if isinstance(ingest_url, str):
            base = ingest_url.rstrip("/")
            self.upload_url = f"{base}/{upload_path.lstrip('/')}"
            self.status_url = f"{base}/{status_path.lstrip('/')}"
        else:
            endpoint = uploader_endpoint(ingest_url)
            self.upload_url, self.status_url = endpoint.url, str(endpoint.status_url)
            options.setdefault("requests_options", endpoint.requests_options)
        super().__init__(**options)
        self.temp_dir = temp_dir

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteUploaderRunner:
        """A runner for ``settings.ingest_url`` and its paths, auth and timeouts."""
        return cls(
            settings.ingest_url,
            upload_path=settings.ingest_upload_path,
            status_path=settings.ingest_status_path,
            **cls.options_from(settings),
        )

    def upload(
        self,
        directory: str | None = None,
        transaction: Transaction | None = None,
        transaction_key_values: Sequence[TransactionKeyValue] | None = None,
        timeout: float | None = None,
        *,
        basedir_name: str | None = None,
    ) -> UploadResult:
        """Upload the bundle and wait until ingest reports ``ingest metadata`` at 100 %.

        ``timeout`` (default: the runner's ``default_timeout``) bounds the wait for the job
        once the bundle is uploaded; every HTTP request also has ``request_timeout``.

        Raises:
            TypeError: neither ``directory`` nor ``basedir_name`` is given.
            TransactionDuplicateAttributeError: ``transaction`` carries an ``_id``.
            ValueError: the transaction metadata is empty or has a blank value.
            UploadError: ingest refused the bundle, answered with an error or non-JSON body,
                or the job FAILED (the message carries ingest's task and exception text).
            TransferTimeoutError: the job did not finish within ``timeout`` seconds.
        """
        directory = target_directory(directory, basedir_name)
        wait = self.default_timeout if timeout is None else timeout
        with requests.Session() as session:
            metadata, job_id = self._upload_bundle(
                session, directory, transaction, transaction_key_values
            )
            state = self._wait_until_complete(session, job_id, wait)
        from pacifica.dispatcher.history.lineage import record_upload  # (imports storage)

        record_upload(job_id)  # ingest's job id is the new transaction's id
        return UploadResult(job_id=job_id, state=state, metadata=metadata)

    def _upload_bundle(
        self,
        session: requests.Session,
        directory: str,
        transaction: Transaction | None,
        key_values: Sequence[TransactionKeyValue] | None,
    ) -> tuple[list[dict[str, Any]], int]:
        # A temporary file rather than a pipe: ingest needs the Content-Length up front.
        descriptor, path = tempfile.mkstemp(
            prefix="pacifica-bundle-", suffix=".tar", dir=self.temp_dir
        )
        try:
            with os.fdopen(descriptor, "w+b") as handle:
                metadata = write_bundle(directory, transaction, key_values, handle)
                size = handle.tell()
                handle.seek(0)
                return metadata, self._post_bundle(session, handle, size)
        finally:
            os.unlink(path)

    def _request(
        self, session: requests.Session, method: str, url: str, **kwargs: Any
    ) -> dict[str, Any]:
        with self.request(session, method, url, UploadError, **kwargs) as response:
            return _json_object(response, f"{method} {url}")

    def _post_bundle(self, session: requests.Session, handle: IO[bytes], size: int) -> int:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        answer = self._request(session, "POST", self.upload_url, data=handle, headers=headers)
        try:
            return int(answer["job_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UploadError(f"ingest upload answer has no job_id: {answer!r}") from exc

    def _wait_until_complete(
        self, session: requests.Session, job_id: int, timeout: float
    ) -> dict[str, Any]:
        last: list[dict[str, Any]] = [{}]

        def complete() -> dict[str, Any] | None:
            last[0] = self._request(session, "GET", self.status_url, params={"job_id": job_id})
            return last[0] if is_complete(last[0], job_id) else None

        return self.poll(
            complete, timeout, lambda: f"ingest job {job_id} not complete; last state: {last[0]}"
        )


def is_complete(state: Mapping[str, Any], job_id: int | None = None) -> bool:
    """True once an ingest state says ``OK`` / ``ingest metadata`` / 100; False while in progress.

    Raises:
        UploadError: the state is FAILED (with ingest's task and exception text), or lacks
            ``state``, ``task`` or a numeric ``task_percent``.
    """
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise UploadError(f"ingest job {job_id} state lacks {', '.join(missing)}: {dict(state)}")
    if state["state"] == "FAILED":
        raise UploadError(
            f"ingest job {job_id} failed at task {state['task']!r}: {state.get('exception', '')}"
        )
    try:
        percent = float(state["task_percent"])
    except (TypeError, ValueError) as exc:
        raise UploadError(
            f"ingest job {job_id} task_percent is not a number: {dict(state)}"
        ) from exc
    return state["state"] == "OK" and state["task"] == COMPLETE_TASK and percent == 100


def _json_object(response: requests.Response, what: str) -> dict[str, Any]:
    excerpt = response.text[:300].strip()
    if not response.ok:
        raise UploadError(f"ingest {what}: HTTP {response.status_code} {excerpt}")
    try:
        answer = response.json()
    except ValueError as exc:
        raise UploadError(
            f"ingest {what}: HTTP {response.status_code}, not JSON: {excerpt}"
        ) from exc
    if not isinstance(answer, dict):
        raise UploadError(f"ingest {what}: HTTP {response.status_code}, not an object: {excerpt}")
    return answer
