"""WSGI entry for uWSGI and gunicorn: ``pacifica.dispatcher.wsgi:application``.

The application is built on first access from the environment's settings, so
importing this module does no work.
"""

from __future__ import annotations

from typing import Any

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import build, open_checked_database


def create_application(settings: Settings | None = None) -> Any:
    """Build the WSGI application of the stand-alone service."""
    settings = settings or Settings.from_env()
    open_checked_database(settings)
    return build(settings).wsgi_app()


def __getattr__(name: str) -> Any:
    if name == "application":
        app = create_application()
        globals()["application"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
