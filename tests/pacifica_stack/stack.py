"""Run the real upstream Pacifica services on loopback for end-to-end tests.

The shell scripts beside this module do the work: ``install.sh`` (Debian packages and a
separate venv with the pinned upstream services), ``up.sh`` (start everything from a wiped state
and load the policy fixtures) and ``down.sh`` (stop by PID).  This module wraps them for the test
suite and adds a few HTTP helpers (upload a bundle, wait for the ingest job, fetch files through a
cartd cart).

Only the standard library and ``requests`` are used, so it runs in the project's own venv.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mimetypes
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import requests

HERE = Path(__file__).resolve().parent

#: Where metadata POSTs its CloudEvents unless ``PACIFICA_NOTIFY_URL`` says otherwise.
DEFAULT_NOTIFY_URL = "http://127.0.0.1:19070/receive"

#: The records ``load_fixtures.py`` creates: a bundle with these passes the policy gate.
SUBMITTER = 10
PROJECT = "1234a"
INSTRUMENT = 54

#: Generous: the machine has 2 cores and other work runs beside the tests.
INSTALL_TIMEOUT = 1800.0
UP_TIMEOUT = 600.0
DOWN_TIMEOUT = 120.0
HTTP_TIMEOUT = 60.0

BundleSource = Union[bytes, str, "os.PathLike[str]"]


class StackError(RuntimeError):
    """The stack could not be installed, started or stopped; the message holds the log tail."""


@dataclass(frozen=True)
class PacificaStack:
    """Base URLs (no trailing slash) of a running stack, plus where its state and logs are."""

    ingest_url: str = "http://127.0.0.1:19066"
    cartd_url: str = "http://127.0.0.1:19081"
    metadata_url: str = "http://127.0.0.1:19121"
    policy_url: str = "http://127.0.0.1:19181"
    archiveinterface_url: str = "http://127.0.0.1:19080"
    uniqueid_url: str = "http://127.0.0.1:19051"
    notify_url: str = DEFAULT_NOTIFY_URL
    state_dir: str = "/tmp/pacifica-stack"

    @property
    def log_dir(self) -> str:
        """Directory holding one log file per service (``ingest.log``, ``metadata.log``, ...)."""
        return os.path.join(self.state_dir, "logs")


def state_dir() -> str:
    """Return the state directory: ``PACIFICA_STACK_DIR``, default ``/tmp/pacifica-stack``."""
    return os.environ.get("PACIFICA_STACK_DIR") or "/tmp/pacifica-stack"


def _system_tools_present() -> bool:
    """Tell whether the Debian packages install.sh would install are all there already."""
    pg_bins = list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return (
        bool(pg_bins)
        and all(
            shutil.which(tool) for tool in ("redis-server", "redis-cli", "gcc", "curl", "runuser")
        )
        and Path("/usr/include/postgresql/libpq-fe.h").exists()
    )


def stack_unavailable_reason() -> str | None:
    """Explain why the stack cannot run on this machine, or return ``None`` if it can.

    It needs Linux, bash, root (PostgreSQL runs as the ``postgres`` user via ``runuser``; missing
    Debian packages are installed with ``apt-get``) and either the packages or ``apt-get``.
    """
    if not sys.platform.startswith("linux"):
        return f"the Pacifica stack needs Linux (this is {sys.platform})"
    if shutil.which("bash") is None:
        return "the Pacifica stack needs bash"
    if os.geteuid() != 0:
        return (
            "the Pacifica stack needs root"
            " (PostgreSQL is run as the postgres user, apt-get installs packages)"
        )
    if not _system_tools_present() and shutil.which("apt-get") is None:
        return "PostgreSQL/Redis/libpq-dev/gcc/curl are missing and there is no apt-get"
    return None


def stack_available() -> bool:
    """Return ``True`` if :func:`start_stack` can be expected to work here."""
    return stack_unavailable_reason() is None


def _tail(text: str, lines: int = 60) -> str:
    """Return the last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _run_script(name: str, env: Mapping[str, str], timeout: float) -> str:
    """Run ``bash <name>`` from this directory; return its output or raise :class:`StackError`.

    Output goes to a temporary file, not a pipe, so a background process the script leaves
    running can never keep us waiting for EOF.
    """
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        try:
            proc = subprocess.run(
                ["bash", str(HERE / name)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            out.seek(0)
            raise StackError(
                f"{name} did not finish within {timeout:.0f}s; last output:\n{_tail(out.read())}"
            ) from None
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise StackError(f"{name} failed (exit {proc.returncode}); last output:\n{_tail(output)}")
    return output


def _script_env(notify_url: str | None = None) -> dict[str, str]:
    """Environment for the scripts: ours, minus the project venv, plus the notify URL."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    if notify_url is not None:
        env["PACIFICA_NOTIFY_URL"] = notify_url
    return env


def start_stack(notify_url: str = DEFAULT_NOTIFY_URL) -> PacificaStack:
    """Install what is missing (``install.sh``, ~1 s when done before), then start the stack.

    ``up.sh`` always starts from a wiped state (fresh databases, archive and volumes) and loads
    the fixtures, so ingest job / transaction ids and file ids start at 1.  Metadata POSTs its
    CloudEvents to ``notify_url``; nothing is started there.  Raises :class:`StackError` with the
    tail of the failing script's output (which includes the failing service's log tail).
    """
    reason = stack_unavailable_reason()
    if reason is not None:
        raise StackError(reason)
    env = _script_env(notify_url)
    _run_script("install.sh", env, INSTALL_TIMEOUT)
    try:
        _run_script("up.sh", env, UP_TIMEOUT)
    except StackError:
        # up.sh stops what it started when it fails, but not when it is killed by our timeout.
        with contextlib.suppress(StackError):
            stop_stack()
        raise
    return PacificaStack(notify_url=notify_url, state_dir=state_dir())


def stop_stack() -> None:
    """Stop every process of the stack by PID (``down.sh``); :class:`StackError` on failure."""
    _run_script("down.sh", _script_env(), DOWN_TIMEOUT)


# --------------------------------------------------------------------------- ingest


def upload_bundle(stack: PacificaStack, bundle: BundleSource) -> int:
    """POST a tar bundle (bytes or a tar file's path) to ingest ``/upload``; return the job id.

    The job id is also the metadata transaction id (``Transactions._id``) once ingested.
    """
    url = f"{stack.ingest_url}/upload"
    headers = {"Content-Type": "application/octet-stream"}
    if isinstance(bundle, bytes):
        resp = requests.post(url, data=bundle, headers=headers, timeout=HTTP_TIMEOUT)
    else:
        with open(bundle, "rb") as fobj:
            headers["Content-Length"] = str(os.fstat(fobj.fileno()).st_size)
            resp = requests.post(url, data=fobj, headers=headers, timeout=HTTP_TIMEOUT)
    resp.raise_for_status()
    return int(resp.json()["job_id"])


def ingest_finished(state: Mapping[str, Any]) -> bool:
    """Tell whether an ingest ``/get_state`` answer is final: FAILED, or ingest metadata 100."""
    if state.get("state") == "FAILED":
        return True
    try:
        percent = float(state.get("task_percent", 0))
    except (TypeError, ValueError):
        return False
    return state.get("task") == "ingest metadata" and percent >= 100


def wait_for_ingest(
    stack: PacificaStack, job_id: int, timeout: float = 120.0, interval: float = 0.2
) -> dict[str, Any]:
    """Poll ingest ``/get_state?job_id=`` until the job is final; return that state.

    Success looks like ``{"state": "OK", "task": "ingest metadata", "task_percent": "100.00000",
    "complete": true, ...}``; failure like ``{"state": "FAILED", "task": "Policy Validation",
    "exception": "...", ...}``.  Raises :class:`TimeoutError` with the last state seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            resp = requests.get(
                f"{stack.ingest_url}/get_state", params={"job_id": job_id}, timeout=HTTP_TIMEOUT
            )
            if resp.status_code == 200:
                last = resp.json()
                if ingest_finished(last):
                    return dict(last)
            else:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"ingest job {job_id} not finished after {timeout:.0f}s; last state: {last}"
            )
        time.sleep(min(interval, remaining))


# --------------------------------------------------------------------------- bundles (smoke test)


def build_bundle(
    files: Mapping[str, bytes],
    *,
    submitter: int = SUBMITTER,
    project: str = PROJECT,
    instrument: int = INSTRUMENT,
    key_values: Mapping[str, str] | None = None,
) -> bytes:
    """Build an ingest bundle: ``data/<path>`` members plus a ``metadata.txt`` JSON list.

    ``files`` maps POSIX paths relative to ``data/`` (``"a.txt"``, ``"sub/b.bin"``) to their bytes.
    Each file gets a ``Files`` record (name, subdir without ``data/``, size, sha1, mimetype,
    ctime/mtime) the way pacifica-uploader writes them; no directory members (ingest asks uniqueid
    for one file id per member except metadata.txt).  Minimal on purpose: the project's own bundle
    writer is tested elsewhere.
    """
    now = int(time.time())
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).replace(tzinfo=None).isoformat()
    metadata: list[dict[str, Any]] = [
        {"destinationTable": "Transactions.submitter", "value": submitter},
        {"destinationTable": "Transactions.project", "value": project},
        {"destinationTable": "Transactions.instrument", "value": instrument},
    ]
    for key, value in (key_values or {}).items():
        metadata.append({"destinationTable": "TransactionKeyValue", "key": key, "value": value})
    members: list[tuple[str, bytes]] = []
    for rel_path, blob in files.items():
        clean = posixpath.normpath(rel_path)
        if clean.startswith(("/", "..")) or clean == ".":
            raise ValueError(f"bundle paths must be relative and inside data/: {rel_path!r}")
        subdir, name = posixpath.split(clean)
        metadata.append(
            {
                "destinationTable": "Files",
                "name": name,
                "subdir": subdir,
                "size": len(blob),
                "hashtype": "sha1",
                "hashsum": hashlib.sha1(blob, usedforsecurity=False).hexdigest(),
                "mimetype": mimetypes.guess_type(name, strict=True)[0]
                or "application/octet-stream",
                "ctime": stamp,
                "mtime": stamp,
            }
        )
        members.append((f"data/{clean}", blob))
    members.append(("metadata.txt", json.dumps(metadata).encode("utf-8")))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for member_name, blob in members:
            info = tarfile.TarInfo(member_name)
            info.size = len(blob)
            info.mtime = now
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


# --------------------------------------------------------------------------- cartd


def cart_fileids(file_records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Turn metadata ``Files`` records (``_id``, ``subdir``, ``name``, hash) into cart fileids."""
    return [
        {
            "id": str(rec["_id"]),
            "path": posixpath.join(str(rec.get("subdir") or ""), str(rec["name"])),
            "hashtype": rec["hashtype"],
            "hashsum": rec["hashsum"],
        }
        for rec in file_records
    ]


def download_cart(
    stack: PacificaStack,
    fileids: list[dict[str, Any]],
    timeout: float = 120.0,
    interval: float = 0.2,
) -> dict[str, bytes]:
    """Create a cart for ``fileids``, wait until it is ready, download it, delete it.

    ``POST /<uuid>`` with ``{"fileids": [...]}``, ``HEAD`` until ``X-Pacifica-Status: ready``,
    ``GET ?filename=data``.  Returns ``{path inside the cart without "data/": bytes}``.
    Raises :class:`TimeoutError` if the cart is not ready in time, :class:`StackError` if it fails.
    """
    cart_url = f"{stack.cartd_url}/{uuid.uuid4()}"
    resp = requests.post(cart_url, json={"fileids": fileids}, timeout=HTTP_TIMEOUT)
    if resp.status_code != 201:
        raise StackError(f"cart POST -> {resp.status_code} {resp.text[:300]}")
    try:
        deadline = time.monotonic() + timeout
        while True:
            head = requests.head(cart_url, timeout=HTTP_TIMEOUT)
            status = head.headers.get("X-Pacifica-Status")
            if status == "ready":
                break
            if status == "error" or head.status_code >= 500:
                raise StackError(
                    f"cart error: {head.status_code} {head.headers.get('X-Pacifica-Message')}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"cart {cart_url} not ready after {timeout:.0f}s (status {status!r})"
                )
            time.sleep(min(interval, remaining))
        got = requests.get(cart_url, params={"filename": "data"}, timeout=HTTP_TIMEOUT)
        got.raise_for_status()
        result: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    name = (
                        member.name[len("data/") :]
                        if member.name.startswith("data/")
                        else member.name
                    )
                    result[name] = extracted.read()
        return result
    finally:
        requests.delete(cart_url, timeout=HTTP_TIMEOUT)
