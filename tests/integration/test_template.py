"""Baked projects in a fresh venv: install, own tests and linters, serve and handle an event.

One module-scoped venv holds pacifica-dispatcher installed NON-editable (from a
clean copy of this checkout, so the template must ship inside the package) and
two projects made by ``pacifica-dispatcher new``, installed with ``pip install -e``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from pacifica.dispatcher.bundles import read_bundle
from tests.integration.conftest import ManagedProcess, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# Not part of the build; a copied build/ directory could also ship stale files.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "benchmarks"
)
PROJECTS = {
    "Hello, world!": ("pacifica-dispatcher-hello-world", "hello_world"),
    "Café Données": ("pacifica-dispatcher-cafe-donnees", "cafe_donnees"),
}
FINAL_STATUSES = ("200 OK", "422 Unprocessable Entity", "500 Internal Server Error")


def clean_environment() -> dict[str, str]:
    """This environment without our venv and without settings that would leave the embedded default."""
    dropped = (
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "DATABASE_URL",
        "PEEWEE_URL",
        "BROKER_URL",
        "DISPATCHER_CONFIG",
    )
    return {k: v for k, v in os.environ.items() if k not in dropped}


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment and the projects created in it."""

    root: Path
    projects: Path

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    def run(
        self, *command: str | Path, cwd: Path | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of this venv; fail the test with its output if it fails."""
        env = clean_environment()
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        result = subprocess.run(
            [str(c) for c in command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    base = tmp_path_factory.mktemp("template")
    source = base / "pacifica-dispatcher"
    shutil.copytree(REPO, source, ignore=COPY_IGNORE)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    made = Venv(base / "venv", base / "projects")
    made.run(made.bin("python"), "-m", "pip", "install", "-q", source)
    return made


@pytest.fixture(scope="module")
def new_output(venv: Venv) -> str:
    """``pacifica-dispatcher new`` for each project, then ``pip install -e`` of them all."""
    outputs = [
        venv.run(
            venv.bin("pacifica-dispatcher"),
            "new",
            "--no-input",
            name,
            "--output-dir",
            venv.projects,
        ).stdout
        for name in PROJECTS
    ]
    editables = [
        arg for repo, _ in PROJECTS.values() for arg in ("-e", f"{venv.projects / repo}[dev]")
    ]
    venv.run(venv.bin("python"), "-m", "pip", "install", "-q", *editables)
    return "\n".join(outputs)


def test_new_renders_the_template_shipped_in_the_installed_package(
    venv: Venv, new_output: str
) -> None:
    located = venv.run(
        venv.bin("python"),
        "-c",
        "from pacifica.dispatcher.scaffold import template_dir; print(template_dir())",
        cwd=venv.projects,
    ).stdout.strip()

    assert Path(located).is_relative_to(venv.root)  # site-packages, not this checkout
    for repo, module in PROJECTS.values():
        assert str(venv.projects / repo) in new_output
        assert f"python3 -m unittest {module}_test.py" in new_output
        assert not list((venv.projects / repo).rglob("__pycache__"))


@pytest.mark.parametrize("name", list(PROJECTS))
def test_baked_project_passes_its_own_tests_and_linters(
    venv: Venv, new_output: str, name: str
) -> None:
    repo, module = PROJECTS[name]
    project = venv.projects / repo

    tests = venv.run(
        venv.bin("python"), "-m", "unittest", f"{module}_test.py", cwd=project / "tests"
    )
    assert "OK" in tests.stderr
    venv.run(venv.bin("ruff"), "check", "--no-cache", ".", cwd=project)
    venv.run(venv.bin("ruff"), "format", "--no-cache", "--check", ".", cwd=project)
    venv.run(venv.bin(repo), "--help", cwd=project)


@pytest.fixture
def served(venv: Venv, new_output: str, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The hello-world project serving on a free port (embedded default, local runners)."""
    project = venv.projects / "pacifica-dispatcher-hello-world"
    event_dir = project / "tests" / "test_files" / "metadata.ingest.1234"
    output = tmp_path / "bundles"
    port = free_port()
    env = clean_environment()
    env.update(
        DISPATCHER_DATA_DIR=str(tmp_path / "data"),
        DISPATCHER_LOCAL_DATA=str(event_dir / "data"),
        DISPATCHER_OUTPUT_DIR=str(output),
        PYTHONUNBUFFERED="1",
    )
    command = [
        str(venv.bin("python")),
        "-m",
        "pacifica.dispatcher_hello_world",
        "--port",
        str(port),
    ]
    server = ManagedProcess("server", command, env, tmp_path / "server.log").start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/", timeout=2).ok, timeout=60, what="the web server")
        yield url, event_dir, output
    finally:
        server.stop()
        print(server.log_tail())


def test_baked_project_serves_and_its_worker_handles_the_test_event(
    served: tuple[str, Path, Path],
) -> None:
    url, event_dir, output = served
    body = (event_dir / "event.json").read_bytes()

    answer = requests.post(
        f"{url}/receive", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 202, answer.text
    task_id = answer.json()

    def final_status() -> str | None:
        status = requests.get(f"{url}/status/{task_id}", timeout=5).json()
        return status if status in FINAL_STATUSES else None

    status = wait_for(final_status, timeout=120, interval=0.2, what="the event to be handled")
    assert status == "200 OK", requests.get(f"{url}/get/{task_id}", timeout=5).text
    bundles = list(output.glob("*.tar"))
    assert len(bundles) == 1
    contents = read_bundle(bundles[0])
    assert contents.files == {
        "notes/hello.txt": (event_dir / "data" / "notes" / "hello.txt").read_bytes().upper(),
        "raw/spectrum.bin": (event_dir / "data" / "raw" / "spectrum.bin").read_bytes().upper(),
    }
    key_values = {
        r["key"]: r["value"]
        for r in contents.metadata
        if r["destinationTable"] == "TransactionKeyValue"
    }
    transaction_id = next(
        r["value"] for r in json.loads(body)["data"] if r["destinationTable"] == "Transactions._id"
    )
    assert key_values == {"Transactions._id": transaction_id}


def test_baked_project_builds_its_wsgi_application(
    venv: Venv, new_output: str, tmp_path: Path
) -> None:
    probe = (
        "import os, sys\n"
        f"os.environ['DISPATCHER_DATA_DIR'] = {str(tmp_path)!r}\n"
        "from pacifica.dispatcher_hello_world.__main__ import celery_app\n"
        "from pacifica.dispatcher_hello_world.wsgi import application\n"
        "assert callable(application), application\n"
        "assert 'pacifica.dispatcher.process' in celery_app.tasks\n"
    )
    venv.run(venv.bin("python"), "-c", probe, cwd=tmp_path)
