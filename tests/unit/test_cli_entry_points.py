"""project_entry_points: the lazy celery_app and main() of a dispatcher project."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacifica.dispatcher import NoopEventHandler, Router
from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings


def test_project_celery_app_is_built_once_with_the_project_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_DATA_DIR", str(tmp_path))
    calls: list[Settings] = []

    def create_router(settings: Settings) -> Router:
        calls.append(settings)
        router = Router()
        router.add_route("$", NoopEventHandler(), name="everything")
        return router

    module_getattr, _ = project_entry_points(create_router, "pkg.__main__:celery_app")
    app = module_getattr("celery_app")
    assert module_getattr("celery_app") is app
    assert [r.name for r in app.dispatcher_context.router.routes] == ["everything"]
    assert len(calls) == 1


def test_other_module_attributes_are_not_found() -> None:
    module_getattr, _ = project_entry_points(lambda settings: Router(), "pkg:celery_app")
    with pytest.raises(AttributeError):
        module_getattr("application")
