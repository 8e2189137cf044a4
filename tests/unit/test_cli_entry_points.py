"""project_entry_points: the lazy celery_app and main() of a dispatcher project."""

from __future__ import annotations

import pytest

from pacifica.dispatcher import NoopEventHandler, Router
from pacifica.dispatcher.cli import project_entry_points


def test_project_celery_app_is_built_once_with_the_project_routes(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCHER_DATA_DIR", str(tmp_path))
    calls = []

    def create_router(settings):
        calls.append(settings)
        router = Router()
        router.add_route("$", NoopEventHandler(), name="everything")
        return router

    module_getattr, _ = project_entry_points(create_router, "pkg.__main__:celery_app")
    app = module_getattr("celery_app")
    assert module_getattr("celery_app") is app
    assert [r.name for r in app.dispatcher_context.router.routes] == ["everything"]
    assert len(calls) == 1


def test_other_module_attributes_are_not_found():
    module_getattr, _ = project_entry_points(lambda settings: Router(), "pkg:celery_app")
    with pytest.raises(AttributeError):
        module_getattr("application")
