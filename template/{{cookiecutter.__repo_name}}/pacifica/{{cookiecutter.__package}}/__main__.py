"""Entry points of {{ cookiecutter.__repo_name }}.

* ``python -m {{ cookiecutter.__import_path }}`` (or ``{{ cookiecutter.__console_script }}``):
  the pacifica-dispatcher command line with this project's router; it serves
  by default (``--host``, ``--port`` 8069, ``--config``) and, without
  ``BROKER_URL``, starts a worker too.
* ``celery -A {{ cookiecutter.__import_path }}.__main__:celery_app worker``: a worker.
* ``create_application()``: the WSGI application (``wsgi.py`` serves it to uWSGI).

``celery_app`` is built on first access, so importing this module reads no
configuration and opens no connection.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from pacifica.dispatcher import cli
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service import wsgi_app_from_env
from pacifica.dispatcher.worker import create_celery

from {{ cookiecutter.__import_path }}.router import (
    create_router,
)

APP_NAME = "{{ cookiecutter.__import_path }}"
WORKER_APP = f"{APP_NAME}.__main__:celery_app"


def create_celery_app(settings: Settings | None = None) -> Any:
    """The Celery app whose workers run this project's routes."""
    settings = settings or Settings.from_env()
    return create_celery(settings, create_router(settings), name=APP_NAME)


def create_application(settings: Settings | None = None) -> Any:
    """The WSGI application: receives events and answers status queries."""
    return wsgi_app_from_env(create_router, settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``serve`` by default; ``--help`` lists the others)."""
    return cli.main(argv, router_factory=create_router, worker_app=WORKER_APP)


def __getattr__(name: str) -> Any:
    """Build ``celery_app`` on first access (``celery -A`` looks it up with getattr)."""
    if name != "celery_app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    app = create_celery_app()
    globals()[name] = app
    return app


if __name__ == "__main__":
    sys.exit(main())
