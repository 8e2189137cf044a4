"""The consumer's Celery app, for the worker the command starts:
``celery -A pacifica.dispatcher.consumer.worker_app:celery_app worker``.

Built on first access from the environment the command sets (the settings
and ``ConsumerConfig``'s variables), so importing this module does no work.
"""

from __future__ import annotations

from pacifica.dispatcher.cli import project_entry_points
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.consumer.handler import ConsumerConfig, ConsumerHandler
from pacifica.dispatcher.downloader_runners import RemoteDownloaderRunner
from pacifica.dispatcher.router import Router

WORKER_APP = "pacifica.dispatcher.consumer.worker_app:celery_app"
ROUTE_NAME = "consumer"  # stable across restarts: a redelivered event skips a run that succeeded


def create_router(settings: Settings, config: ConsumerConfig | None = None) -> Router:
    """One route: the consumer's ``jsonpath2.txt`` → its entry point.

    Raises:
        InvalidRouteError: the JSONPath does not parse.
        KeyError: ``config`` is not given and the environment does not hold it.
    """
    config = config or ConsumerConfig.from_env()
    router = Router()
    handler = ConsumerHandler(config, settings, RemoteDownloaderRunner.from_settings(settings))
    router.add_route(config.app / "jsonpath2.txt", handler, name=ROUTE_NAME)
    return router


# ``celery_app`` is built on first access, the way every dispatcher project's is.
__getattr__, _main = project_entry_points(create_router, WORKER_APP)
