"""A consumer's private workspace: the extracted archive, its virtual environment, its runs.

``Workspace.create()`` makes one temporary directory holding everything the
command creates (``app/`` the extracted consumer.zip, ``venv/``, ``runs/``
one directory per entry point run, ``data/`` the embedded database and
broker unless configured otherwise), so stopping removes it all at once.
``prepare`` creates the venv (without pip: the command's own pip installs
into it with ``--python``, which is much faster than seeding pip), copies in
the helper module, runs ``init.sh`` and installs ``requirements.txt`` with
``promise``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pacifica.dispatcher.consumer.archive import INIT_SCRIPT, REQUIREMENTS_FILE
from pacifica.dispatcher.errors import ConsumerSetupError

Progress = Callable[[str], None]
HELPER = "pacifica_notifications_consumer.py"
HELPER_REQUIREMENTS = ("promise",)  # what the helper module imports besides the stdlib


@dataclass(frozen=True)
class Workspace:
    """The consumer's temporary directory and the paths inside it."""

    root: Path

    @classmethod
    def create(cls, parent: str | None = None) -> Workspace:
        """A new private (mode 0700) temporary directory with its subdirectories."""
        workspace = cls(Path(tempfile.mkdtemp(prefix="pacifica-consumer-", dir=parent)))
        for folder in (workspace.app, workspace.runs):
            folder.mkdir()
        return workspace

    @property
    def app(self) -> Path:
        """The extracted consumer.zip: the entry point's working directory."""
        return self.root / "app"

    @property
    def venv(self) -> Path:
        """The consumer's virtual environment."""
        return self.root / "venv"

    @property
    def runs(self) -> Path:
        """One directory per entry point run (SRC, DST, output)."""
        return self.root / "runs"

    @property
    def data(self) -> Path:
        """The embedded database and broker, unless DATABASE_URL/BROKER_URL say otherwise."""
        return self.root / "data"

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.venv / "bin" / "python"

    def remove(self) -> None:
        """Delete the workspace and everything in it."""
        shutil.rmtree(self.root, ignore_errors=True)


def venv_environment(venv: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of processes run in the consumer's venv (init.sh, entry points).

    ``pip`` there installs into the venv (``PIP_PYTHON``) with the command's pip.
    """
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONHOME", None)
    env.pop("PYTHONPATH", None)
    own_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), own_bin, env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_PYTHON"] = str(venv / "bin" / "python")
    return env


def prepare(workspace: Workspace, progress: Progress, init_timeout: float) -> None:
    """Create the venv, install the helper module, run init.sh, install the requirements.

    Raises:
        ConsumerSetupError: a step failed; the message says which and why.
    """
    progress(f"creating the virtual environment {workspace.venv}")
    _run([sys.executable, "-m", "venv", "--without-pip", str(workspace.venv)], "venv", 120)
    install_helper(workspace.python)
    init = workspace.app / INIT_SCRIPT
    if init.exists():
        progress(f"running {INIT_SCRIPT} (timeout {init_timeout:g} s)")
        run_init(init, workspace, progress, init_timeout)
    requirements = workspace.app / REQUIREMENTS_FILE
    progress(
        f"installing {REQUIREMENTS_FILE} and {', '.join(HELPER_REQUIREMENTS)}"
        if requirements.exists()
        else f"installing {', '.join(HELPER_REQUIREMENTS)}"
    )
    install_requirements(workspace.python, requirements if requirements.exists() else None)


def install_helper(python: Path) -> Path:
    """Copy the ``pacifica_notifications_consumer`` module into the venv's site-packages."""
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        "venv",
        60,
    ).strip()
    target = Path(purelib) / HELPER
    source = resources.files(__package__).joinpath(HELPER).read_text(encoding="utf-8")
    target.write_text(source, encoding="utf-8")
    return target


def run_init(script: Path, workspace: Workspace, progress: Progress, timeout: float) -> None:
    """Run ``init.sh`` with ``sh`` in the extracted directory, showing its output.

    Raises:
        ConsumerSetupError: it exited non-zero or ran past ``timeout``.
    """
    try:
        done = subprocess.run(
            ["sh", str(script)],
            cwd=workspace.app,
            env=venv_environment(workspace.venv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConsumerSetupError(f"{INIT_SCRIPT}: still running after {timeout:g} s") from None
    output = done.stdout.decode("utf-8", "replace").rstrip()
    for line in output.splitlines():
        progress(f"  {INIT_SCRIPT}: {line}")
    if done.returncode != 0:
        raise ConsumerSetupError(f"{INIT_SCRIPT}: exited with status {done.returncode}")


def install_requirements(python: Path, requirements: Path | None) -> None:
    """pip-install the helper's requirements and ``requirements.txt`` into the venv.

    Raises:
        ConsumerSetupError: pip failed; the message has pip's errors and the failing lines.
    """
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    command += [*HELPER_REQUIREMENTS, *(["-r", str(requirements)] if requirements else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
    message = "\n".join(errors or done.stderr.strip().splitlines()[-5:])
    lines = failing_lines(requirements, message) if requirements else []
    where = "".join(f"\n{REQUIREMENTS_FILE} {line}" for line in lines)
    raise ConsumerSetupError(f"pip could not install the requirements:\n{message}{where}")


def failing_lines(requirements: Path, pip_message: str) -> list[str]:
    """``line N 'text'`` for each requirement pip's message names."""
    found = []
    for number, line in enumerate(requirements.read_text(encoding="utf-8").splitlines(), 1):
        bare = line.split("#", 1)[0].strip()
        name = re.split(r"[\s\[<>=!~;@]", bare, maxsplit=1)[0]
        if name and re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", pip_message, re.I):
            found.append(f"line {number} {bare!r}")
    return found


def _run(command: list[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConsumerSetupError(f"{what}: still running after {timeout:g} s") from None
    if done.returncode != 0:
        raise ConsumerSetupError(f"{what}: {done.stderr.strip() or done.returncode}")
    return done.stdout
