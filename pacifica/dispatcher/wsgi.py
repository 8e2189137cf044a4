"""WSGI entry for uWSGI and gunicorn: ``pacifica.dispatcher.wsgi:application``.

This module is a composition root: importing it reads the settings and opens
the database, because WSGI servers look ``application`` up as a plain module
attribute (uWSGI does not trigger a module ``__getattr__``). Run uWSGI with
``--lazy-apps`` so each worker process imports it, and so opens its own
database connection, after the fork.
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


application = create_application()
