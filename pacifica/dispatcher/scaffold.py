"""Scaffolding: render the cookiecutter template into a new pacifica-dispatcher-<name> project.

The template is the repository's top-level ``template/``; setup.py ships it in
the installed package as ``pacifica/dispatcher/template``, so
``pacifica-dispatcher new`` works from a wheel as well as from a checkout.
The naming rules live with the template (``template/dispatcher_names.py``),
where cookiecutter uses them too; this module loads them to refuse a bad name
before rendering anything. cookiecutter is imported here only.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pacifica.dispatcher.errors import DispatcherError

TEMPLATE_CONTEXT = "cookiecutter.json"
NAMES_MODULE = "dispatcher_names.py"
REPO_PREFIX = "pacifica-dispatcher-"
_HERE = Path(__file__).resolve().parent
# Installed: next to this module. Source checkout (and editable installs): the repository root.
TEMPLATE_LOCATIONS = (_HERE / "template", _HERE.parents[1] / "template")


class ScaffoldError(DispatcherError):
    """The project could not be created."""


class InvalidProjectNameError(ScaffoldError, ValueError):
    """The project name leaves no valid repository, package or class name."""


@dataclass(frozen=True)
class ProjectNames:
    """The names the template derives from a project name (the SOP's naming table)."""

    name: str
    repo_name: str
    import_path: str
    module: str
    handler_class: str
    test_class: str

    @property
    def test_module(self) -> str:
        """The unit test file, relative to the project's ``tests`` directory."""
        return f"{self.module}_test.py"


def template_dir() -> Path:
    """The directory of the cookiecutter template.

    Raises:
        ScaffoldError: the template is neither installed nor in a source checkout.
    """
    for candidate in TEMPLATE_LOCATIONS:
        if (candidate / TEMPLATE_CONTEXT).is_file():
            return candidate
    searched = ", ".join(str(c) for c in TEMPLATE_LOCATIONS)
    raise ScaffoldError(f"the project template is missing (looked in {searched})")


def _naming_rules(template: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pacifica_dispatcher_template_names", template / NAMES_MODULE
    )
    if spec is None or spec.loader is None:
        raise ScaffoldError(f"cannot load the naming rules in {template / NAMES_MODULE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_names(name: str) -> ProjectNames:
    """Derive every name of a project, as the template does.

    Raises:
        InvalidProjectNameError: the name has no letters or digits, or starts with a digit.
    """
    rules = _naming_rules(template_dir())
    problem: str = rules.name_problem(name)
    if problem:
        raise InvalidProjectNameError(problem)
    slug: str = rules.slug(name)
    module: str = rules.slug(name, "_")
    prefix: str = rules.upper_camel(name)
    return ProjectNames(
        name=name,
        repo_name=f"{REPO_PREFIX}{slug}",
        import_path=f"pacifica.dispatcher_{module}",
        module=module,
        handler_class=f"{prefix}EventHandler",
        test_class=f"{prefix}TestCase",
    )


def create_project(name: str, output_dir: str | Path = ".", no_input: bool = True) -> Path:
    """Render the template for ``name`` into ``output_dir``; return the new project directory.

    With ``no_input`` false, cookiecutter asks for the project name (``name`` is the default).

    Raises:
        InvalidProjectNameError: the name leaves no valid names.
        ScaffoldError: the project directory exists already, or rendering failed.
    """
    names = project_names(name)
    target = Path(output_dir) / names.repo_name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; choose another name or --output-dir")
    from cookiecutter.exceptions import CookiecutterException
    from cookiecutter.main import cookiecutter

    with tempfile.TemporaryDirectory(prefix="pacifica-dispatcher-new-") as scratch:
        # A clean copy: an installed template may hold __pycache__ directories that pip
        # compiled, which cookiecutter would copy into the project.
        template = Path(scratch) / "template"
        shutil.copytree(
            template_dir(), template, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        try:
            created = cookiecutter(
                str(template),
                no_input=no_input,
                extra_context={"name": _literal(name)},
                output_dir=str(output_dir),
                config_file=str(_private_config(Path(scratch))),
            )
        except CookiecutterException as exc:
            raise ScaffoldError(f"cannot create the project: {exc}") from exc
    return Path(created)


def _literal(text: str) -> str:
    # cookiecutter renders the values it is given as Jinja templates; a name is only text.
    return f"{{% raw %}}{text}{{% endraw %}}" if "{" in text else text


def _private_config(scratch: Path) -> Path:
    # Keep cookiecutter's replay and clone directories out of the user's home directory.
    config = scratch / "cookiecutter.yaml"
    lines = [
        f"replay_dir: {json.dumps(str(scratch / 'replay'))}",
        f"cookiecutters_dir: {json.dumps(str(scratch / 'cookiecutters'))}",
    ]
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def next_steps(project: Path) -> list[str]:
    """The commands that install, test and run a project made by ``create_project``."""
    # Words hold only letters and digits, so the slug maps one-to-one onto the module name.
    module = project.name.removeprefix(REPO_PREFIX).replace("-", "_")
    return [
        f"cd {project}",
        "python3 -m pip install -e .",
        f"(cd tests && python3 -m unittest {module}_test.py)",
        f"python3 -m pacifica.dispatcher_{module}    # web server on 127.0.0.1:8069 and a worker",
    ]
