"""The HTTP side: the receiver, the status and subscription API, the operator's pages.

CherryPy is imported in this package only.

Handlers are thin: read the request, call one core function, write JSON. The
receiver never runs user code: it parses, stores, enqueues and answers.
Handlers raise the package's errors; ``http.ERROR_STATUS``, looked up along
the exception's class hierarchy, turns them into answers, for the WSGI
receiver and for CherryPy alike.

The package splits it by audience: ``receiver`` (``POST /receive`` as plain
WSGI), ``api`` (status and subscriptions), ``operator`` (the operator page,
metrics, health), ``server`` (building the application, CherryPy's server)
and ``common`` (JSON bodies and errors, the request's user, the config).
"""

from pacifica.dispatcher.service.web.api import (
    EventMatch,
    Get,
    LineageView,
    Replays,
    Root,
    RouteReplays,
    Status,
)
from pacifica.dispatcher.service.web.common import app_config, json_body
from pacifica.dispatcher.service.web.operator import operator_mounts
from pacifica.dispatcher.service.web.receiver import Accept, MountableReceiver, Receiver, Verify
from pacifica.dispatcher.service.web.server import create_app, serve, stop_serving

__all__ = [
    "Accept",
    "EventMatch",
    "Get",
    "LineageView",
    "MountableReceiver",
    "Receiver",
    "Replays",
    "Root",
    "RouteReplays",
    "Status",
    "Verify",
    "app_config",
    "create_app",
    "json_body",
    "operator_mounts",
    "serve",
    "stop_serving",
]
