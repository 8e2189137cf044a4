"""The layout the README's architecture section promises: one owner per framework, and the
import paths users rely on still working."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pacifica" / "dispatcher"

# framework -> the modules (relative to the package) allowed to import it at run time
OWNERS = {
    "peewee": ("storage/",),
    "playhouse": ("storage/",),
    "celery": ("service/worker.py",),
    "kombu": ("service/worker.py", "service/broker.py"),
    "cherrypy": ("service/web/",),
    "cloudevents": ("events.py",),
    "prometheus_client": ("metrics.py",),
}


def runtime_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports, leaving out ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("framework", sorted(OWNERS))
def test_each_framework_is_imported_by_its_owner_only(framework: str) -> None:
    allowed = OWNERS[framework]
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if framework in runtime_imports(path)
        and not str(path.relative_to(PACKAGE)).startswith(allowed)
    ]
    assert offenders == [], f"{framework} imported outside {allowed}: {offenders}"


def test_the_layout_check_sees_imports_at_all() -> None:
    assert "peewee" in runtime_imports(PACKAGE / "storage" / "schema.py")
    assert "cloudevents" not in runtime_imports(PACKAGE / "event_handlers.py")  # typing only


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("pacifica.dispatcher.worker", "create_celery"),  # baked projects' __main__.py
        ("pacifica.dispatcher.worker", "default_router"),
        ("pacifica.dispatcher.worker", "celery_app_from_env"),
        ("pacifica.dispatcher.subscription_handler", "add_subscription_route"),
        ("pacifica.dispatcher.subscriptions", "add_subscription_route"),
        ("pacifica.dispatcher.service", "wsgi_app_from_env"),
        ("pacifica.dispatcher.wsgi", "application"),
        ("pacifica.dispatcher.cli", "project_entry_points"),
        ("pacifica.dispatcher.router", "Router"),
        ("pacifica.dispatcher.event_handlers", "EventHandler"),
        ("pacifica.dispatcher.models", "Transaction"),
        ("pacifica.dispatcher.downloader_runners", "RemoteDownloaderRunner"),
        ("pacifica.dispatcher.uploader_runners", "RemoteUploaderRunner"),
        ("pacifica.dispatcher.testing", "run_router"),
    ],
)
def test_documented_import_paths_keep_working(module: str, name: str) -> None:
    if name == "application":  # importing it opens the configured database: read it instead
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert "application = " in Path(str(spec.origin)).read_text(encoding="utf-8")
        return
    assert getattr(importlib.import_module(module), name) is not None
