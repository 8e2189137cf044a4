"""Real services for integration tests: Redis, PostgreSQL, RabbitMQ, the receiver and workers.

Services come from the environment (``.ci/services.sh start`` prints the
exports: TEST_REDIS_URL, TEST_POSTGRES_URL, TEST_AMQP_URL). A missing service
skips the test locally and fails it under CI.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.conftest import service_required

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # a server still starting refuses connections
            last = exc
        else:
            last = value
            if value and not isinstance(value, Exception):
                return value
        time.sleep(interval)  # the polling interval, not a synchronisation guess
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_base_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:16390")
    if not _reachable(url):
        service_required(f"Redis not reachable at {url} (run .ci/services.sh start)")
    return url


_redis_db = itertools.count(1)


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """A Redis database of its own for this test, emptied first.

    Never shared: a worker a test left behind must not take another test's
    messages. ``.ci/services.sh`` starts Redis with 1,024 databases.
    """
    import redis

    client = redis.Redis.from_url(redis_base_url)
    available = int(str(client.config_get("databases").get("databases", 16)))
    number = next(_redis_db)
    if number >= available:
        pytest.fail(f"Redis has {available} databases; start it as .ci/services.sh does")
    url = f"{redis_base_url}/{number}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:15499/postgres")
    if not _reachable(url):
        service_required(f"PostgreSQL not reachable at {url} (run .ci/services.sh start)")
    return url


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import psycopg2

    name = f"dispatcher_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    yield postgres_admin_url.rsplit("/", 1)[0] + f"/{name}"
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:15690//")
    if not _reachable(url):
        service_required(f"RabbitMQ not reachable at {url} (run .ci/services.sh start)")
    return url


@dataclass
class ManagedProcess:
    """A child process in its own session, with its output in a log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the leader (it stops its own children), then SIGKILL what is left."""
        if self.process is None:
            return
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process and every child it started: a crash."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@dataclass
class Deployment:
    """One dispatcher deployment under test: its settings, receiver and workers."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, command: list[str]) -> ManagedProcess:
        log = self.workdir / f"{name}-{len(self.processes)}.log"
        proc = ManagedProcess(name, command, self.env, log).start()
        self.processes.append(proc)
        return proc

    def start_server(self, *extra: str) -> ManagedProcess:
        command = [sys.executable, "-m", "tests.integration.app", "serve", "--port", str(self.port)]
        return self.start_http("server", [*command, *extra])

    def start_http(self, name: str, command: list[str]) -> ManagedProcess:
        """Start a process that serves this deployment's port; return once it answers."""
        proc = self._spawn(name, command)
        wait_for(lambda: self._answers() or not proc.alive(), 60, what=f"{name} to answer")
        if not proc.alive():
            raise AssertionError(f"{name} exited:\n{proc.log_tail()}")
        return proc

    def _answers(self) -> bool:
        return requests.get(f"{self.url}/?limit=1", timeout=2).status_code == 200

    def start_worker(self, concurrency: int = 2) -> ManagedProcess:
        return self._spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.integration.app:celery_app",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.integration.app", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def post(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(
            f"{self.url}/receive",
            data=data,
            headers=headers or {"Content-Type": "application/json"},
            timeout=30,
        )

    def status(self, task_id: str) -> str:
        return str(requests.get(f"{self.url}/status/{task_id}", timeout=10).json())

    def wait_status(self, task_id: str, expected: str, timeout: float = 120.0) -> None:
        try:
            wait_for(
                lambda: self.status(task_id) == expected, timeout, 0.1, f"{task_id} → {expected}"
            )
        except AssertionError as exc:
            logs = "\n".join(f"--- {p.log_path.name}\n{p.log_tail()}" for p in self.processes)
            raise AssertionError(f"{exc}; now {self.status(task_id)}\n{logs}") from None

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/get/{task_id}", timeout=10).json())

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def event(kind: str, event_id: str | None = None, **data: Any) -> dict[str, Any]:
    """A CloudEvents 1.0 structured event of type ``org.example.<kind>``."""
    return {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "type": f"org.example.{kind}",
        "source": "/tests/integration",
        "data": data or [kind],
    }


FAST_RECOVERY = {"REQUEUE_INTERVAL": "1", "REQUEUE_AFTER": "5", "WORKER_CONCURRENCY": "2"}


def base_env(workdir: Path, **overrides: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "PEEWEE_URL")
    }
    env.update(
        {
            "DISPATCHER_DATA_DIR": str(workdir / "data"),
            "PYTHONUNBUFFERED": "1",
            # Webhook targets here are stubs on loopback, which the address policy refuses.
            "ALLOWED_TARGET_NETWORKS": "127.0.0.0/8",
            **FAST_RECOVERY,
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Make deployments from environment overrides; every process is stopped at the end."""
    made: list[Deployment] = []

    def make(**overrides: str) -> Deployment:
        workdir = tmp_path / f"deployment-{len(made)}"
        workdir.mkdir()
        deployment = Deployment(base_env(workdir, **overrides), workdir)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop()


@pytest.fixture
def production(
    deployments: Callable[..., Deployment], postgres_url: str, redis_url: str
) -> Deployment:
    """PostgreSQL + Redis, schema synced, receiver and a worker running."""
    deployment = deployments(DATABASE_URL=postgres_url, BROKER_URL=redis_url)
    synced = deployment.cli("db", "sync")
    assert synced.returncode == 0, synced.stderr
    deployment.start_server()
    deployment.start_worker()
    return deployment


@pytest.fixture
def embedded(deployments: Callable[..., Deployment]) -> Deployment:
    """The embedded default: nothing configured, one command runs receiver and worker."""
    deployment = deployments()
    deployment.start_server()
    return deployment


@dataclass
class RedisServer:
    """The ``redis_server`` fixture: call it to start (or restart) redis-server on ``port``."""

    port: int
    start: Callable[[], ManagedProcess]

    def __call__(self) -> ManagedProcess:
        return self.start()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Start a private redis-server (the test may stop and restart it) on a fixed free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_required("redis-server is not installed")
    port = free_port()
    started: list[ManagedProcess] = []

    def start() -> ManagedProcess:
        command = [
            binary or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ]
        proc = ManagedProcess("redis", command, dict(os.environ), tmp_path / "redis.log").start()
        started.append(proc)
        wait_for(lambda: _reachable(f"redis://127.0.0.1:{port}"), 10, what="redis")
        return proc

    yield RedisServer(port, start)
    for proc in started:
        proc.kill()
