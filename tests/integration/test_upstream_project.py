"""An upstream 0.2.5 dispatcher project, unchanged but for one import, on this package.

``tests/upstream_project`` is installed (with pacifica-cli, pacifica-downloader
and pacifica-uploader from the package index, as such projects install them)
into a fresh venv beside a non-editable copy of this checkout. Its own
unittest tests pass; its ``python -m`` entry serves, and its Celery worker
handles the test event end to end: the files come from a cartd through
its ``Downloader`` and the upper-cased copy goes to an ingest through its
``Uploader``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pacifica.dispatcher.bundles import read_bundle
from tests.fake_pacifica import FakeCartd, FakeIngest
from tests.integration.conftest import ManagedProcess, free_port, wait_for
from tests.integration.test_template import (
    COPY_IGNORE,
    FINAL_STATUSES,
    REPO,
    Venv,
    clean_environment,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROJECT = Path(__file__).resolve().parents[1] / "upstream_project"
EVENT_DIR = PROJECT / "tests" / "test_files" / "C234-1234-1234"
UPSTREAM_CLIENTS = ["pacifica-cli", "pacifica-downloader", "pacifica-uploader"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """This package (non-editable) and the upstream-style project, installed as users would."""
    base = tmp_path_factory.mktemp("upstream-project")
    source = base / "pacifica-dispatcher"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    made = Venv(base / "venv", base / "projects")
    shutil.copytree(PROJECT, made.projects / "pacifica-dispatcher-upper")
    made.run(made.bin("python"), "-m", "pip", "install", "-q", source, *UPSTREAM_CLIENTS)
    made.run(
        made.bin("python"),
        "-m",
        "pip",
        "install",
        "-q",
        made.projects / "pacifica-dispatcher-upper",
    )
    return made


def project_env(home: Path, **settings: str) -> dict[str, str]:
    env = clean_environment()
    env.update(
        HOME=str(home), PYTHONUNBUFFERED="1", **settings
    )  # pacifica-cli reads ~/.pacifica-cli
    return env


def test_the_upstream_projects_own_tests_pass(venv: Venv, tmp_path: Path) -> None:
    tests = venv.projects / "pacifica-dispatcher-upper" / "tests"
    result = subprocess.run(
        [str(venv.bin("python")), "-m", "unittest", "upper_test.py"],
        cwd=tests,
        env=project_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 3 tests" in result.stderr


@pytest.fixture
def pacifica() -> Iterator[tuple[FakeCartd, FakeIngest]]:
    with FakeCartd() as cartd, FakeIngest() as ingest:
        yield cartd, ingest


def test_the_upstream_entry_point_serves_and_its_worker_handles_the_event(
    venv: Venv, tmp_path: Path, redis_url: str, pacifica: tuple[FakeCartd, FakeIngest]
) -> None:
    cartd, ingest = pacifica
    document = json.loads((EVENT_DIR / "event.json").read_text(encoding="utf-8"))
    [item] = [i for i in document["data"] if i["destinationTable"] == "Files"]
    data = (EVENT_DIR / "data" / item["subdir"] / item["name"]).read_bytes()
    cartd.add(item["_id"], f"{item['subdir']}/{item['name']}", data)
    port = free_port()
    env = project_env(
        tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'upper.sqlite3'}",
        BROKER_URL=redis_url,
        DOWNLOAD_URL=cartd.url,
        UPLOAD_URL=f"{ingest.url}/upload",
        UPLOAD_STATUS_URL=f"{ingest.url}/get_state",
    )
    python = str(venv.bin("python"))
    worker_command = [python, "-m", "celery", "-A", "pacifica.dispatcher_upper.__main__:celery_app"]
    worker_command += ["worker", "-l", "info", "--concurrency", "1", "--without-gossip"]
    processes = [
        ManagedProcess(
            "server",
            [python, "-m", "pacifica.dispatcher_upper", "--port", str(port)],
            env,
            tmp_path / "server.log",
        ).start(),
        ManagedProcess("worker", worker_command, env, tmp_path / "worker.log").start(),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/", timeout=2).ok, timeout=60, what="the server")
        answer = requests.post(f"{url}/receive", json=document, timeout=10)
        assert answer.status_code == 202, answer.text
        task_id = answer.json()

        def final_status() -> str | None:
            status = requests.get(f"{url}/status/{task_id}", timeout=5).json()
            return status if status in FINAL_STATUSES else None

        status = wait_for(final_status, timeout=120, interval=0.2, what="the event to be handled")
        assert status == "200 OK", requests.get(f"{url}/get/{task_id}", timeout=5).text
        again = requests.post(f"{url}/receive", json=document, timeout=10)
        assert (again.status_code, again.json()) == (200, task_id)  # stored once
    finally:
        for process in processes:
            process.stop()
        logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in processes)
        print(logs)

    contents = read_bundle(ingest.bundle(1))
    assert contents.files == {f"{item['subdir']}/{item['name']}": data.upper()}
    key_values = {
        r["key"]: r["value"]
        for r in contents.metadata
        if r["destinationTable"] == "TransactionKeyValue"
    }
    assert key_values == {"Transactions._id": 1234, "upper.keys": 1}
