"""The consumer's one route handler: prepare SRC and DST, run ``__main__.py SRC DST``, upload.

For each matching event a run directory under the workspace's ``runs/`` gets
``src/notification.json`` (the event as delivered), ``src/downloads/`` (the
transaction's files through the downloader runner, hash-checked) and an empty
``dst/uploads/`` (with the downloads' subdirectories, which the reference
example writes into without creating them). The entry point runs in the
venv, in the extracted directory, with a timeout. Exit 0: the files in
``dst/uploads/`` become a new transaction pointing back to the original,
unless the entry point uploaded through the helper module already (never
twice). Anything else raises ``EntryPointError`` with the exit status,
duration and stderr tail, which the service records as the run's failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.consumer.environment import venv_environment
from pacifica.dispatcher.consumer.upload import PYTHON_VARIABLE, RECORD_VARIABLE, upload_directory
from pacifica.dispatcher.downloader_runners import DownloaderRunner, FileOpener, relative_path
from pacifica.dispatcher.errors import EntryPointError
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.models import File, Transaction, event_data_items

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent

TAIL_BYTES = 4096
PID_FILE = "entry.pid"  # a running entry point's process group, for the command's cleanup
PROVENANCE_KEY = "Transactions._id"


@dataclass(frozen=True)
class ConsumerConfig:
    """What a worker needs to run entry points; passed from the command in the environment."""

    app: Path
    venv: Path
    runs: Path
    timeout: float

    VARIABLES: ClassVar[dict[str, str]] = {
        "app": "PACIFICA_CONSUMER_APP",
        "venv": "PACIFICA_CONSUMER_VENV",
        "runs": "PACIFICA_CONSUMER_RUNS",
        "timeout": "PACIFICA_CONSUMER_TIMEOUT",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ConsumerConfig:
        """Read the configuration the command put in the environment.

        Raises:
            KeyError: a variable is missing (the worker was not started by the command).
        """
        env = dict(os.environ if environ is None else environ)
        paths = {k: Path(env[v]) for k, v in cls.VARIABLES.items() if k != "timeout"}
        return cls(timeout=float(env[cls.VARIABLES["timeout"]]), **paths)

    def to_env(self) -> dict[str, str]:
        """This configuration as environment variables."""
        return {v: str(getattr(self, k)) for k, v in self.VARIABLES.items()}

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.venv / "bin" / "python"


@dataclass(frozen=True)
class EntryPointRun:
    """How one run of ``__main__.py`` ended."""

    returncode: int | None  # None: killed at the timeout
    duration: float
    stdout: str
    stderr: str

    @property
    def succeeded(self) -> bool:
        """Exit status 0."""
        return self.returncode == 0

    def describe(self, timeout: float) -> str:
        """``exited with status N`` / ``was killed by SIGKILL`` / ``timed out``, and the time."""
        if self.returncode is None:
            how = f"timed out after {timeout:g} s and was killed"
        elif self.returncode < 0:
            how = f"was killed by {signal.Signals(-self.returncode).name}"
        else:
            how = f"exited with status {self.returncode}"
        return f"__main__.py {how} ({self.duration:.2f} s)"


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file, as text."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        return handle.read().decode("utf-8", "replace")


def run_entry_point(config: ConsumerConfig, src: Path, dst: Path, run_dir: Path) -> EntryPointRun:
    """Run ``python __main__.py SRC DST`` in the venv and the extracted directory."""
    env = venv_environment(config.venv)
    env[PYTHON_VARIABLE] = sys.executable  # the helper's uploads run in this interpreter
    env[RECORD_VARIABLE] = str(run_dir / "upload.json")
    out_path, err_path = run_dir / "stdout", run_dir / "stderr"
    started = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            [str(config.python), "__main__.py", str(src), str(dst)],
            cwd=config.app,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: a timeout kills its children too
        )
        (run_dir / PID_FILE).write_text(str(process.pid))
        try:
            code: int | None = process.wait(config.timeout)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait()
            code = None
        finally:
            (run_dir / PID_FILE).unlink(missing_ok=True)
    return EntryPointRun(code, time.monotonic() - started, tail(out_path), tail(err_path))


def kill_group(pid: int) -> None:
    """SIGKILL a process group (an entry point and what it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def source_transaction(event: Any) -> Transaction:
    """The event's transaction, ``Transactions.proposal`` read as the project (older shape)."""
    found = Transaction.from_event(event)
    if found.project is None:
        proposal = [
            r.get("value")
            for r in event_data_items(event)
            if r.get("destinationTable") == "Transactions.proposal"
        ]
        if proposal:
            return Transaction(**{**found.__dict__, "project": proposal[0]})
    return found


class ConsumerHandler(EventHandler):
    """Runs a consumer.zip's entry point for each event its JSONPath matches."""

    def __init__(
        self, config: ConsumerConfig, settings: Settings, downloader: DownloaderRunner
    ) -> None:
        self.config = config
        self.settings = settings
        self.downloader = downloader

    def handle(self, event: CloudEvent) -> None:
        """Not used: the consumer needs the event as delivered (``handle_received``).

        Raises:
            TypeError: always.
        """
        raise TypeError("ConsumerHandler runs on received events: route it with a Router")

    def handle_received(self, received: ReceivedEvent) -> str:
        """Prepare SRC and DST, run the entry point, upload DST/uploads; the run's report (JSON).

        Raises:
            EntryPointError: the entry point failed (exit status, duration, stderr tail).
            TransferError: downloading the inputs or uploading the outputs failed.
        """
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.config.runs))
        src, dst = run_dir / "src", run_dir / "dst"
        (src / "downloads").mkdir(parents=True)
        (dst / "uploads").mkdir(parents=True)
        notification = json.dumps(received.document, ensure_ascii=False, indent=2)
        (src / "notification.json").write_text(notification, encoding="utf-8")
        self._download(received, run_dir, src / "downloads", dst / "uploads")
        run = run_entry_point(self.config, src, dst, run_dir)
        what = run.describe(self.config.timeout)
        if not run.succeeded:
            raise EntryPointError(f"{what}\n--- stderr (tail) ---\n{run.stderr}")
        report = {
            "exitStatus": run.returncode,
            "duration": round(run.duration, 3),
            "upload": self._upload(received, dst / "uploads", run_dir / "upload.json"),
            "stdout": run.stdout,
            "stderr": run.stderr,
            "directory": str(run_dir),
        }
        return json.dumps(report, ensure_ascii=False)

    def _download(
        self, received: ReceivedEvent, run_dir: Path, downloads: Path, uploads: Path
    ) -> None:
        """The event's files into ``downloads/<subdir>/<name>``, verified; their folders in
        ``uploads`` (the reference example writes there without creating them)."""
        files = File.from_event(received.event)
        if not files:
            return
        openers = self.downloader.download(str(run_dir / "cart"), files)
        for file, opener in zip(files, openers, strict=True):
            relpath = relative_path(file)
            (downloads / relpath).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(opener, FileOpener):
                os.replace(opener.path, downloads / relpath)
            else:  # another runner's opener: copy the bytes
                with opener("rb") as source, (downloads / relpath).open("wb") as target:
                    shutil.copyfileobj(source, target)
            (uploads / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run_dir / "cart", ignore_errors=True)

    def _upload(self, received: ReceivedEvent, uploads: Path, record: Path) -> dict[str, Any]:
        """The entry point's own upload, or DST/uploads uploaded now, or nothing to upload."""
        if record.exists():
            return {"by": "entry point", **json.loads(record.read_text(encoding="utf-8"))}
        if not uploads.is_dir() or not any(p.is_file() for p in uploads.rglob("*")):
            return {"by": None, "reason": "DST/uploads holds no files"}
        source = source_transaction(received.event)
        transaction = Transaction(
            submitter=source.submitter, project=source.project, instrument=source.instrument
        )
        provenance = {} if source._id is None else {PROVENANCE_KEY: source._id}
        result = upload_directory(self.settings, uploads, transaction, provenance)
        return {"by": "command", "job_id": result.job_id, "state": result.state}
