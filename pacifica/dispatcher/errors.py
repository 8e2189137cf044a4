"""Every error pacifica-dispatcher raises, under one root.

Each subclass also inherits the builtin category it belongs to, so callers can
catch ``ValueError`` or ``LookupError`` without importing this module.
``service/http.py`` maps these classes to HTTP answers in one table.
"""

from __future__ import annotations

from typing import Any


class DispatcherError(Exception):
    """Root of every error raised by pacifica-dispatcher."""


class ConfigurationError(DispatcherError, ValueError):
    """A setting is missing or has a value that cannot be used."""


class InvalidEventError(DispatcherError, ValueError):
    """A request body is not a CloudEvent we accept; ``attribute`` names the culprit."""

    def __init__(self, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute


class UnsupportedContentTypeError(InvalidEventError):
    """The request's Content-Type is not one of the CloudEvents HTTP modes we accept."""


class RequestTooLargeError(DispatcherError, ValueError):
    """A request body is larger than the configured limit."""


class RouterError(DispatcherError):
    """Base of the router's errors; ``router`` is the router that raised it."""

    def __init__(self, router: Any, message: str = "router error") -> None:
        super().__init__(message)
        self.router = router


class InvalidRouteError(RouterError, ValueError):
    """A route's JSONPath cannot be parsed or read."""


class NoRouteError(RouterError, LookupError):
    """No route matches the event (upstream name: ``RouteNotFoundRouterError``)."""

    def __init__(self, router: Any, event_data: Any) -> None:
        super().__init__(router, "route not found")
        self.event_data = event_data

    def __str__(self) -> str:
        return "route not found"


RouteNotFoundRouterError = NoRouteError


class EventError(DispatcherError):
    """An event's data cannot be turned into Pacifica models; ``event`` is that event."""

    def __init__(self, event: Any, message: str = "event error") -> None:
        super().__init__(message)
        self.event = event


class TransactionDuplicateAttributeError(EventError, ValueError):
    """A ``Transactions.<name>`` field appears twice, or a new transaction carries an ``_id``."""

    def __init__(self, event: Any, name: str) -> None:
        escaped = name.replace("'", "\\'")
        super().__init__(event, f"field 'Transactions.{escaped}' is already defined")
        self.name = name


class NotFoundError(DispatcherError, LookupError):
    """A task, event or subscription id that does not exist (for this user)."""


class InvalidRequestError(DispatcherError, ValueError):
    """A query parameter or path segment of a request is malformed."""


class InvalidTaskIdError(InvalidRequestError):
    """A task id in a path is not a UUID (upstream answers 422)."""


class MethodNotAllowedError(DispatcherError, ValueError):
    """An HTTP method the path does not take."""


class StorageUnavailableError(DispatcherError, RuntimeError):
    """The database did not store an event in time; the client should send it again."""


class OverloadedError(DispatcherError, RuntimeError):
    """Too many requests are already waiting to be stored; the client should send again later."""


class ServiceError(DispatcherError, RuntimeError):
    """A part of the running service failed and could not be kept alive."""


class SchemaMismatchError(DispatcherError, RuntimeError):
    """The database schema is not the one this code expects: run ``pacifica-dispatcher db sync``."""


class InvalidSubscriptionError(DispatcherError, ValueError):
    """A subscription body breaks the schema; ``field`` names the offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class JSONPathBudgetError(DispatcherError, RuntimeError):
    """Evaluating a subscription's JSONPath on one event took more steps than its budget."""


class AuthenticationRequiredError(DispatcherError, PermissionError):
    """The request carries no user and no default user is configured."""


class ForbiddenError(DispatcherError, PermissionError):
    """The request may not do this: a cross-site form, or a bad form token (403)."""


class TransferError(DispatcherError, RuntimeError):
    """Moving data to or from Pacifica (cartd, ingest) failed."""


class DownloadError(TransferError):
    """A cart could not be created, staged, fetched or verified."""


class HashMismatchError(DownloadError):
    """A downloaded file's size or checksum differs from its metadata."""


class UnsafeArchiveError(DownloadError):
    """A tar member would escape the target directory or link outside it."""


class UploadError(TransferError):
    """An ingest job failed; the message carries ingest's own exception text."""


class TransferTimeoutError(TransferError, TimeoutError):
    """A cart or an ingest job did not finish within the allowed time."""


class InvalidSignatureError(AuthenticationRequiredError):
    """A delivery is unsigned, or its Standard Webhooks signature or timestamp does not verify."""


class ConsumerError(DispatcherError):
    """A consumer.zip could not be checked, set up, registered or run."""


class InvalidArchiveError(ConsumerError, ValueError):
    """A consumer.zip fails its check; the message lists every reason, each naming the file."""


class ConsumerSetupError(ConsumerError, RuntimeError):
    """Preparing a consumer's environment failed (init.sh, pip), or it cannot be started."""


class ProducerError(ConsumerError, RuntimeError):
    """The producer refused or did not answer a subscription request."""


class EntryPointError(ConsumerError, RuntimeError):
    """A consumer's ``__main__.py`` exited non-zero, was killed or timed out; the message
    carries its exit status, duration and the tail of its stderr."""
