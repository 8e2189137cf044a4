"""The documented worker entry point: ``celery -A pacifica.dispatcher.worker:celery_app worker``.

The worker itself lives in ``service.worker``; this module keeps the path
that deployments, the README and scaffolded projects (``create_celery``)
use. ``celery_app`` is built on first access, not at import.
"""

from __future__ import annotations

from typing import Any

from pacifica.dispatcher.service.worker import celery_app_from_env, create_celery, default_router

__all__ = ["celery_app_from_env", "create_celery", "default_router"]


def __getattr__(name: str) -> Any:
    """Build ``celery_app`` on first access (the stand-alone service's worker)."""
    if name == "celery_app":
        app = globals()["celery_app"] = celery_app_from_env(default_router)
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
