"""The cookiecutter template: names per the SOP's table, the layout, test files, bad names.

Projects are baked with cookiecutter's API from the checkout's ``template/``;
``tests/integration/test_template.py`` installs baked projects in a fresh venv.
"""

from __future__ import annotations

import ast
import hashlib
import json
import mimetypes
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter

from pacifica.dispatcher import cli, scaffold
from pacifica.dispatcher.router import compile_path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "template"
TEST_FILES = REPO_ROOT / "tests" / "test_files"

# name, repository, package directory, module, handler class, test class (the SOP's table)
NAMES = [
    (
        "Example",
        "pacifica-dispatcher-example",
        "pacifica/dispatcher_example",
        "example",
        "ExampleEventHandler",
        "ExampleTestCase",
    ),
    (
        "Hello, world!",
        "pacifica-dispatcher-hello-world",
        "pacifica/dispatcher_hello_world",
        "hello_world",
        "HelloWorldEventHandler",
        "HelloWorldTestCase",
    ),
    (
        "Model 2 Runner",
        "pacifica-dispatcher-model-2-runner",
        "pacifica/dispatcher_model_2_runner",
        "model_2_runner",
        "Model2RunnerEventHandler",
        "Model2RunnerTestCase",
    ),
    (
        "Café Données",
        "pacifica-dispatcher-cafe-donnees",
        "pacifica/dispatcher_cafe_donnees",
        "cafe_donnees",
        "CafeDonneesEventHandler",
        "CafeDonneesTestCase",
    ),
    (
        "  NMR\tspectra,  proxy-mod 2024 ",
        "pacifica-dispatcher-nmr-spectra-proxymod-2024",
        "pacifica/dispatcher_nmr_spectra_proxymod_2024",
        "nmr_spectra_proxymod_2024",
        "NMRSpectraProxymod2024EventHandler",
        "NMRSpectraProxymod2024TestCase",
    ),
]
BAD_NAMES = [
    ("", "has no letters or digits"),
    ("!!! ...", "has no letters or digits"),
    ("🚀", "has no letters or digits"),
    ("2 Fast", "must start with a letter"),
]


def bake(name: str, output_dir: Path) -> Path:
    """Render the checkout's template for ``name``, keeping cookiecutter's replay files in tmp."""
    config = output_dir / "cookiecutter.yaml"
    config.write_text(
        f"replay_dir: {json.dumps(str(output_dir / 'replay'))}\n"
        f"cookiecutters_dir: {json.dumps(str(output_dir / 'cookiecutters'))}\n",
        encoding="utf-8",
    )
    return Path(
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context={"name": name},
            output_dir=str(output_dir),
            config_file=str(config),
        )
    )


@pytest.fixture(scope="module")
def baked(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Bake each name once per module."""
    projects: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in projects:
            projects[name] = bake(name, tmp_path_factory.mktemp("bake"))
        return projects[name]

    return get


def text_files(project: Path) -> list[Path]:
    return [
        path
        for path in sorted(project.rglob("*"))
        if path.is_file() and "data" not in path.relative_to(project).parts
    ]


@pytest.mark.parametrize(("name", "repo", "package", "module", "handler", "test_class"), NAMES)
def test_baked_project_is_named_as_the_sop_table_says(
    baked: Callable[[str], Path],
    name: str,
    repo: str,
    package: str,
    module: str,
    handler: str,
    test_class: str,
) -> None:
    project = baked(name)
    package_dir = project / package
    import_path = package.replace("/", ".")

    assert project.name == repo
    for part in ("__init__.py", "__main__.py", "event_handlers.py", "router.py", "wsgi.py"):
        assert (package_dir / part).is_file(), part
    assert (package_dir / "jsonpath2" / f"{module}.txt").is_file()
    assert f"class {handler}(EventHandler):" in (package_dir / "event_handlers.py").read_text()
    test_module = project / "tests" / f"{module}_test.py"
    assert f"class {test_class}(unittest.TestCase):" in test_module.read_text()
    setup_py = (project / "setup.py").read_text()
    assert f'name="{repo}"' in setup_py
    assert f'"{repo} = {import_path}.__main__:main"' in setup_py
    assert f"-A {import_path}.__main__:celery_app worker" in (project / "README.md").read_text()
    assert f'"{import_path}.__main__:celery_app"' in (project / "Dockerfile.celery").read_text()
    assert f'"{import_path}.wsgi:application"' in (project / "Dockerfile.uwsgi").read_text()
    assert (
        f"python -m unittest {module}_test.py"
        in (project / ".github" / "workflows" / "ci.yml").read_text()
    )
    assert scaffold.project_names(name) == scaffold.ProjectNames(
        name=name,
        repo_name=repo,
        import_path=import_path,
        module=module,
        handler_class=handler,
        test_class=test_class,
    )


@pytest.mark.parametrize("name", [n[0] for n in NAMES])
def test_baked_project_is_fully_rendered_valid_python(
    baked: Callable[[str], Path], name: str
) -> None:
    project = baked(name)

    assert not (project / "pacifica" / "__init__.py").exists()  # a PEP 420 namespace
    assert not list(project.rglob("__pycache__"))
    for path in text_files(project):
        text = path.read_text(encoding="utf-8").replace("${{", "")  # GitHub Actions expressions
        assert "{{" not in text, path
        assert "{%" not in text, path
        assert "cookiecutter" not in text, path
        if path.suffix == ".py":
            ast.parse(text, str(path))


def test_baked_project_has_the_upstream_layout(baked: Callable[[str], Path]) -> None:
    project = baked("Hello, world!")

    for part in (
        "setup.py",
        "pyproject.toml",
        "README.md",
        "Dockerfile.celery",
        "Dockerfile.uwsgi",
        "docker-compose.yml",
        ".github/ISSUE_TEMPLATE.md",
        ".github/PULL_REQUEST_TEMPLATE.md",
        ".github/workflows/ci.yml",
        ".gitignore",
        "tests/hello_world_test.py",
    ):
        assert (project / part).is_file(), part
    yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())


def test_test_files_describe_their_data_exactly(baked: Callable[[str], Path]) -> None:
    test_files = baked("Hello, world!") / "tests" / "test_files"
    event_dirs = sorted(p.parent for p in test_files.glob("*/event.json"))

    assert [d.name for d in event_dirs] == ["C234-1234-1234", "metadata.ingest.1234"]
    for event_dir in event_dirs:
        event = json.loads((event_dir / "event.json").read_text())
        assert event["eventID"] == event_dir.name
        records = [r for r in event["data"] if r["destinationTable"] == "Files"]
        described = set()
        for record in records:
            relpath = os.path.join(record["subdir"], record["name"])
            data = (event_dir / "data" / relpath).read_bytes()
            assert record["size"] == len(data), relpath
            assert record["hashtype"] == "sha1"
            assert record["hashsum"] == hashlib.sha1(data, usedforsecurity=False).hexdigest(), (
                relpath
            )
            guessed = mimetypes.guess_type(record["name"])[0] or "application/octet-stream"
            assert record["mimetype"] == guessed, relpath
            described.add(relpath)
        on_disk = {str(p.relative_to(event_dir / "data")) for p in (event_dir / "data").rglob("*")}
        assert described == {p for p in on_disk if (event_dir / "data" / p).is_file()}


def _jsonpath_matches(project: Path, document: Any) -> list[str]:
    path = compile_path(project / "pacifica" / "dispatcher_example" / "jsonpath2" / "example.txt")
    return [m.node.tojsonpath() for m in path.match(document)]


def test_jsonpath_matches_sop_and_real_metadata_events_once_at_the_root(
    baked: Callable[[str], Path],
) -> None:
    project = baked("Example")
    sop = json.loads((TEST_FILES / "sop_example_event.json").read_text())
    real = json.loads((TEST_FILES / "metadata_ingest_event.json").read_text())

    assert sop["source"] == "/pacifica/metadata/ingest"
    assert real["source"].startswith("http://metadata.pacifica.org/transactions?_id=")
    assert _jsonpath_matches(project, sop) == ["$"]
    assert _jsonpath_matches(project, real) == ["$"]


def test_jsonpath_ignores_other_events_and_derived_transactions(
    baked: Callable[[str], Path],
) -> None:
    project = baked("Example")
    real = json.loads((TEST_FILES / "metadata_ingest_event.json").read_text())
    orm = json.loads((TEST_FILES / "metadata_orm_event.json").read_text())
    derived = json.loads(json.dumps(real))
    derived["data"].append(
        {"destinationTable": "TransactionKeyValue", "key": "Transactions._id", "value": 1}
    )
    foreign = {**real, "source": "http://example.org/transactions?_id=1"}
    no_files = {**real, "data": [r for r in real["data"] if r["destinationTable"] != "Files"]}

    for document in (orm, derived, foreign, no_files):
        assert _jsonpath_matches(project, document) == []


def test_docker_compose_services_reach_each_other_by_name(baked: Callable[[str], Path]) -> None:
    compose = yaml.safe_load((baked("Hello, world!") / "docker-compose.yml").read_text())
    services = compose["services"]

    assert {"frontend", "backend", "postgres", "redis", "migrate"} <= set(services)
    assert services["frontend"]["ports"] == ["8069:8069"]
    for name in ("frontend", "backend", "migrate"):
        environment = services[name]["environment"]
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["BROKER_URL"] == "redis://redis:6379/0"
        assert not any("127.0.0.1" in v or "localhost" in v for v in environment.values())


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_pre_gen_hook_rejects_bad_names_with_a_clear_message(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    with pytest.raises(FailedHookException):
        bake(name, tmp_path)

    assert f"ERROR: the project name {name!r} {message}" in capfd.readouterr().err
    assert not list(tmp_path.glob("pacifica-dispatcher-*"))


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_create_project_refuses_bad_names_before_rendering(
    tmp_path: Path, name: str, message: str
) -> None:
    with pytest.raises(scaffold.InvalidProjectNameError, match=message) as caught:
        scaffold.create_project(name, tmp_path)

    assert isinstance(caught.value, ValueError)
    assert list(tmp_path.iterdir()) == []


def test_create_project_renders_the_template_and_says_what_next(tmp_path: Path) -> None:
    project = scaffold.create_project("Hello, world!", tmp_path)

    assert project == tmp_path / "pacifica-dispatcher-hello-world"
    assert (project / "pacifica" / "dispatcher_hello_world" / "router.py").is_file()
    assert "(cd tests && python3 -m unittest hello_world_test.py)" in scaffold.next_steps(project)
    with pytest.raises(scaffold.ScaffoldError, match="already exists"):
        scaffold.create_project("Hello, world!", tmp_path)


def test_create_project_takes_jinja_syntax_in_a_name_literally(tmp_path: Path) -> None:
    project = scaffold.create_project("Curly {{ braces }} {% raw %}", tmp_path)

    assert project.name == "pacifica-dispatcher-curly-braces-raw"
    assert '"Curly {{ braces }} {% raw %}"' in (project / "README.md").read_text()


def test_cookiecutter_command_renders_the_checkout_template(tmp_path: Path) -> None:
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--config-file",
            str(config),
            "--output-dir",
            str(tmp_path),
            str(TEMPLATE),
            "name=Hello, world!",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert (
        tmp_path / "pacifica-dispatcher-hello-world" / "tests" / "hello_world_test.py"
    ).is_file()


def test_baked_project_passes_its_own_unit_tests(baked: Callable[[str], Path]) -> None:
    # The fresh-venv version of this check is in tests/integration/test_template.py.
    project = baked("Hello, world!")
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "hello_world_test.py"],
        cwd=project / "tests",
        env={**os.environ, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


@pytest.mark.parametrize("name", [n[0] for n in NAMES])
def test_baked_project_passes_its_own_linters(baked: Callable[[str], Path], name: str) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this Python")
    project = baked(name)
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [str(ruff), *command, "--no-cache"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_new_command_creates_the_project_and_prints_next_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["new", "--no-input", "Hello, world!", "--output-dir", str(tmp_path)])

    out = capsys.readouterr().out
    assert code == 0
    assert f"created {tmp_path / 'pacifica-dispatcher-hello-world'}" in out
    assert "python3 -m pacifica.dispatcher_hello_world" in out


def test_new_command_reports_a_bad_name_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["new", "--no-input", "2 Fast", "--output-dir", str(tmp_path)])

    assert code == 2
    assert "must start with a letter" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "8070"], ["serve", "--port", "8070"]),
        (["--host=0.0.0.0"], ["serve", "--host=0.0.0.0"]),
        (["--no-worker"], ["serve", "--no-worker"]),
        (["worker", "--pool", "solo"], ["worker", "--pool", "solo"]),
        (["--version"], ["--version"]),
        ([], []),
    ],
)
def test_serve_options_alone_mean_serve_as_upstream_projects_ran(
    argv: list[str], expected: list[str]
) -> None:
    # A generated project's README runs `python -m pacifica.dispatcher_<name> --port N`.
    assert cli.serve_by_default(argv) == expected
