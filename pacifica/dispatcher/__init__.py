"""pacifica-dispatcher: route Pacifica CloudEvents to Python event handlers.

The names here are the public API for handler authors; see the README's
"Writing an event handler" section.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pacifica.dispatcher.errors import (
    DispatcherError,
    InvalidEventError,
    InvalidRouteError,
    NoRouteError,
    RouteNotFoundRouterError,
    RouterError,
    TransactionDuplicateAttributeError,
)
from pacifica.dispatcher.event_handlers import (
    EventHandler,
    ExceptionEventHandler,
    NoopEventHandler,
)
from pacifica.dispatcher.events import ReceivedEvent, parse_document, parse_http
from pacifica.dispatcher.models import File, FileKeyValue, Transaction, TransactionKeyValue
from pacifica.dispatcher.router import Route, RouteOutcome, Router

try:
    __version__ = version("pacifica-dispatcher")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DispatcherError",
    "EventHandler",
    "ExceptionEventHandler",
    "File",
    "FileKeyValue",
    "InvalidEventError",
    "InvalidRouteError",
    "NoRouteError",
    "NoopEventHandler",
    "ReceivedEvent",
    "Route",
    "RouteNotFoundRouterError",
    "RouteOutcome",
    "Router",
    "RouterError",
    "Transaction",
    "TransactionDuplicateAttributeError",
    "TransactionKeyValue",
    "__version__",
    "parse_document",
    "parse_http",
]
