"""Running a consumer: start every step, and on SIGINT/SIGTERM reverse every one of them.

Start: check and extract the zip into a private workspace, prepare the venv
(init.sh, requirements), start a supervised worker and the receiver (the
dispatcher's own, with one route and a signature check on ``/receive``), then
register at the producer. Stop (in this order): delete the subscription, stop
the worker once its running entry points finish (or after the grace period,
then kill what is left), stop the receiver, remove the workspace and venv.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.consumer import archive, environment
from pacifica.dispatcher.consumer.environment import Workspace
from pacifica.dispatcher.consumer.handler import PID_FILE, ConsumerConfig, kill_group
from pacifica.dispatcher.consumer.producer import Producer, Registration
from pacifica.dispatcher.consumer.signing import DeliveryVerifier
from pacifica.dispatcher.consumer.worker_app import WORKER_APP, create_router
from pacifica.dispatcher.errors import ConsumerSetupError, DispatcherError, ServiceError

log = logging.getLogger(__name__)
READY_TIMEOUT = 60.0


def progress(message: str) -> None:
    """Show a step of the start or the stop."""
    print(f"consumer: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ConsumerOptions:
    """What the command line says about one consumer."""

    archive: Path
    producer: Producer
    host: str = "127.0.0.1"
    port: int = 8071
    public_url: str | None = None
    concurrency: int = 1
    timeout: float = 3600.0
    init_timeout: float = 600.0
    grace: float = 60.0
    workdir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # Settings overrides

    @property
    def target_url(self) -> str:
        """Where the producer delivers: the public URL's ``/receive``."""
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/") + "/receive"

    @property
    def local_url(self) -> str:
        """The receiver as this machine reaches it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


class Interrupted(Exception):
    """SIGTERM arrived while the consumer was still starting."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def consumer_settings(options: ConsumerOptions, workspace: Workspace) -> Settings:
    """The dispatcher settings of the consumer's own service.

    Raises:
        ConfigurationError: a setting from the environment is invalid.
    """
    settings = Settings.from_env()
    changes: dict[str, Any] = {
        "worker_concurrency": options.concurrency,
        "worker_prefetch": 1,  # entry points are long: never hold one back behind another
        "processing_lease": max(settings.processing_lease, options.timeout + 300),
        **options.settings,
    }
    if not os.environ.get("DISPATCHER_DATA_DIR"):
        changes["data_dir"] = str(workspace.data)
    return settings.with_overrides(**changes)


def run(options: ConsumerOptions) -> int:
    """Start the consumer and serve until SIGINT/SIGTERM; clean up whatever happens.

    Raises:
        DispatcherError: a step failed (the archive, the venv, the producer, the worker).
    """
    report = archive.check_archive(options.archive)
    for finding in report.findings:
        progress(str(finding))
    report.raise_for_errors()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    workspace = Workspace.create(options.workdir)
    try:
        progress(f"extracting {options.archive} into {workspace.app}")
        archive.extract(options.archive, workspace.app)
        environment.prepare(workspace, progress, options.init_timeout)
        settings = consumer_settings(options, workspace)
        config = ConsumerConfig(workspace.app, workspace.venv, workspace.runs, options.timeout)
        ConsumerService(options, settings, config, report.jsonpath or "").serve()
    except (KeyboardInterrupt, Interrupted):
        progress("interrupted while starting")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        kill_running_entry_points(workspace.runs)
        workspace.remove()
        progress(f"removed {workspace.root}")
    return 0


def kill_running_entry_points(runs: Path) -> None:
    """Kill entry points still running (after the grace period), by their recorded groups."""
    for pid_file in runs.glob(f"*/{PID_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            kill_group(int(pid_file.read_text()))


@dataclass
class ConsumerService:
    """The consumer's running parts: worker, receiver, subscription."""

    options: ConsumerOptions
    settings: Settings
    config: ConsumerConfig
    jsonpath: str
    verifier: DeliveryVerifier = field(default_factory=DeliveryVerifier)
    registration: Registration | None = None
    failures: list[str] = field(default_factory=list)
    _stopped: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        """Run until interrupted.

        Raises:
            ServiceError: registration failed, or the worker kept exiting.
        """
        from pacifica.dispatcher import service
        from pacifica.dispatcher.service.supervisor import Supervisor
        from pacifica.dispatcher.service.web import serve

        built = service.build(self.settings, create_router(self.settings, self.config))
        service.open_checked_database(self.settings)
        env = {**os.environ, **self.settings.to_env(), **self.config.to_env()}
        command = service.worker_command(WORKER_APP, self.settings)
        worker = Supervisor(
            "worker",
            lambda: subprocess.Popen(command, env=env, start_new_session=True),
            self._give_up,
            stop_timeout=self.options.grace,
        )
        progress(f"starting a worker ({self.options.concurrency} entry point(s) at once)")
        worker.begin()
        threading.Thread(target=self._register, name="register", daemon=True).start()
        progress(f"starting the receiver on {self.options.local_url}")
        try:
            serve(
                built.wsgi_app(verify=self.verifier),
                self.options.host,
                self.options.port,
                None,
                lambda: self._stop(worker.stop),
            )
        finally:
            self._stop(worker.stop)
        if self.failures:
            raise ServiceError(self.failures[0])

    def _give_up(self, reason: str) -> None:
        from pacifica.dispatcher.service.web import stop_serving

        self.failures.append(reason)
        stop_serving()

    def _register(self) -> None:
        try:
            wait_until_answering(self.options.local_url, READY_TIMEOUT, self._stopped)
            if self._stopped.is_set():
                return
            producer = self.options.producer
            progress(f"registering {self.options.target_url} at {producer.url} as {producer.user}")
            self.registration = producer.register(
                self.jsonpath, self.options.target_url, self.verifier.secret
            )
        except DispatcherError as exc:
            self._give_up(f"registration failed: {exc}")
            return
        if self.registration.replaced:
            progress(f"replaced stale subscription(s) {', '.join(self.registration.replaced)}")
        if not self.registration.signed:
            self.verifier.require_signature = False
            progress(
                "warning: the producer does not sign deliveries (an upstream "
                "pacifica-notifications?): unsigned deliveries are accepted"
            )
        progress(f"subscription {self.registration.uuid} registered; ready")

    def _stop(self, stop_worker: Callable[[], None]) -> None:
        """Reverse the start once: subscription, then the worker (after its running runs)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.registration is not None:
            progress(f"deleting subscription {self.registration.uuid}")
            try:
                self.options.producer.delete(self.registration.uuid)
            except DispatcherError as exc:
                progress(f"warning: could not delete the subscription: {exc}")
        progress(f"stopping the worker (running entry points get {self.options.grace:g} s)")
        stop_worker()


def wait_until_answering(url: str, timeout: float, stopped: threading.Event) -> None:
    """Poll ``GET url/?limit=1`` until it answers 200.

    Raises:
        ConsumerSetupError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not stopped.is_set():
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/?limit=1", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ConsumerSetupError(f"the receiver did not answer at {url} in {timeout:g} s")
        stopped.wait(0.1)
