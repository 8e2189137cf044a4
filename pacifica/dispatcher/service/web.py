"""The HTTP side (CherryPy lives here only): the receiver and the status and subscription API.

Handlers are thin: read the request, call one core function, write JSON. The
receiver never runs user code: it parses, stores, enqueues and answers.
Handlers raise the package's errors; ``http.ERROR_STATUS``, looked up along
the exception's class hierarchy, turns them into answers, for the WSGI
receiver and for CherryPy alike.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cherrypy
from cheroot.server import HTTPConnection, HTTPRequest

from pacifica.dispatcher import metrics
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import (
    AuthenticationRequiredError,
    InvalidSubscriptionError,
    MethodNotAllowedError,
    NotFoundError,
)
from pacifica.dispatcher.events import ReceivedEvent, parse_http
from pacifica.dispatcher.history import api as history_api
from pacifica.dispatcher.history import dryrun, lineage
from pacifica.dispatcher.service import dispatch, openapi, operations, pages, views
from pacifica.dispatcher.service.dispatch import Acceptance
from pacifica.dispatcher.service.http import (
    RETRY_AFTER,
    encode_json,
    error_body,
    page_arguments,
    parse_task_id,
    read_limited,
    request_headers_of,
    status_line,
    user_from_header,
)
from pacifica.dispatcher.storage import events as stored_events
from pacifica.dispatcher.subscriptions import registry
from pacifica.dispatcher.subscriptions.addresses import policy_from

log = logging.getLogger(__name__)

# Stores events and returns once they are committed (``intake.Intake.submit``).
Accept = Callable[[Sequence[ReceivedEvent]], list[Acceptance]]
# Checks a request's headers and body before anything is parsed or stored; raises to refuse
# (e.g. ``InvalidSignatureError`` → 401). A consumer verifies its producer's signatures with it.
Verify = Callable[[Mapping[str, str], bytes], None]


def json_body(value: Any) -> bytes:
    """Serialise a response body as JSON and set the Content-Type."""
    cherrypy.response.headers["Content-Type"] = "application/json"
    return encode_json(value)


def json_error_page(status: str, message: str, traceback: str, version: str) -> str:
    """CherryPy's error page: ``{"status", "message"}`` as JSON, never a traceback."""
    del traceback, version
    cherrypy.response.headers["Content-Type"] = "application/json"
    return json.dumps({"status": status, "message": message})


def trim_error_body() -> None:
    """Undo CherryPy's space padding of short error bodies (an old Internet Explorer fix)."""
    body = cherrypy.response.body
    failed = str(cherrypy.response.status or "200")[:1] in ("4", "5")
    if failed and isinstance(body, list):
        cherrypy.response.body = [b"".join(body).rstrip(b" ")]
        cherrypy.response.headers.pop("Content-Length", None)


def error_response() -> None:
    """CherryPy's answer to an exception a handler raised: ``ERROR_STATUS``, as JSON.

    Unknown errors are a 500 whose traceback goes to the log, never the body.
    """
    error = sys.exc_info()[1] or RuntimeError("unknown error")
    code, body = error_body(error)
    if code == 500:
        log.error("unhandled error serving %s", cherrypy.url(), exc_info=True)
    cherrypy.response.status = code
    cherrypy.response.headers["Content-Type"] = "application/json"
    if code == 503:
        cherrypy.response.headers["Retry-After"] = RETRY_AFTER
    cherrypy.response.body = [encode_json(body)]


def read_body(limit: int) -> bytes:
    """The CherryPy request's body, refusing more than ``limit`` bytes (see ``read_limited``)."""
    return read_limited(
        cherrypy.request.body, cherrypy.request.headers.get("Content-Length"), limit
    )


class Root:
    """``GET /``: the most recent tasks, newest first, paginated; below it, the resources
    in ``routes`` (an explicit table: ``{"status": Status(), …}``)."""

    exposed = True

    def __init__(self, routes: Mapping[str, object]) -> None:
        self.routes = dict(routes)

    def _cp_dispatch(self, vpath: list[str]) -> object:
        """The resource for the first path segment (CherryPy's hook for dynamic children)."""
        return self.routes.get(vpath.pop(0), MISSING)

    def GET(self, *vpath: str, **params: str) -> bytes:
        """List recent tasks (``?limit=&offset=``); a ``Link: rel=next`` header pages on."""
        _no_more(vpath)
        limit, offset = page_arguments(params)
        found = stored_events.recent(limit=limit + 1, offset=offset)
        if len(found) > limit:
            cherrypy.response.headers["Link"] = (
                f'</?limit={limit}&offset={offset + limit}>; rel="next"'
            )
        return json_body([views.summarize(e) for e in found[:limit]])


class Missing:
    """The resource at a path nothing is mounted on: 404 whatever the method."""

    exposed = True

    def _not_found(self, *vpath: str, **params: str) -> bytes:
        raise NotFoundError(f"no such path: {cherrypy.request.path_info}")

    GET = POST = PUT = DELETE = HEAD = PATCH = _not_found


MISSING = Missing()


class Receiver:
    """``/receive`` as a plain WSGI app in front of CherryPy; every other path goes to ``fallback``.

    Receiving is nearly all of a dispatcher's traffic, and CherryPy's request
    machinery (hooks, tools, dispatcher, access log) costs more than parsing
    and storing an event does (BENCHMARKS.md), so this one endpoint is served
    without it. Errors come from the same ``ERROR_STATUS`` table and have the
    same JSON shape as CherryPy's.
    """

    def __init__(
        self,
        settings: Settings,
        accept: Accept,
        fallback: cherrypy.Application,
        verify: Verify | None = None,
    ) -> None:
        self.settings = settings
        self.accept = accept
        self.fallback = fallback
        self.verify = verify

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve ``/receive``; hand anything else to CherryPy."""
        path = environ.get("PATH_INFO", "")
        if path != "/receive" and not path.startswith("/receive/"):
            return self.fallback(environ, start_response)  # type: ignore[no-any-return]
        headers = [("Content-Type", "application/json")]
        try:
            code, body = self._receive(environ, path, headers)
        except Exception as exc:
            code, body = error_body(exc)
            metrics.count_received({503: "unavailable", 500: "error"}.get(code, "invalid"))
            if code == 500:
                log.error("unhandled error receiving an event", exc_info=True)
            if code == 503:
                headers.append(("Retry-After", RETRY_AFTER))
        payload = encode_json(body)
        headers.append(("Content-Length", str(len(payload))))
        start_response(status_line(code), headers)
        return [payload]

    def _receive(
        self, environ: dict[str, Any], path: str, headers: list[tuple[str, str]]
    ) -> tuple[int, Any]:
        if path != "/receive":
            raise NotFoundError(f"no such path: {path}")
        if environ.get("REQUEST_METHOD") != "POST":
            headers.append(("Allow", "POST"))
            raise MethodNotAllowedError("/receive takes POST")
        request_headers = request_headers_of(environ)
        body = read_limited(
            environ["wsgi.input"], environ.get("CONTENT_LENGTH"), self.settings.max_body_bytes
        )
        if self.verify is not None:
            self.verify(request_headers, body)
        events = parse_http(request_headers, body)
        accepted = self.accept(events)
        created = sum(a.created for a in accepted)
        metrics.count_received("accepted", created)
        if created < len(accepted):
            metrics.count_received("duplicate", len(accepted) - created)
        ids = [a.uuid for a in accepted]
        headers.append(("Location", f"/status/{ids[0]}"))
        content_type = request_headers.get("Content-Type", "")
        batch = len(events) > 1 or "batch" in content_type
        if log.isEnabledFor(logging.DEBUG):
            log.debug("received %s", ", ".join(f"{e.source} {e.id}" for e in events))
        return (202 if any(a.created for a in accepted) else 200), (ids if batch else ids[0])


class Status:
    """``GET /status/<task_id>``: the upstream status string."""

    exposed = True

    def GET(self, task_id: str | None = None, *rest: str) -> bytes:
        """Answer e.g. ``"200 OK"``."""
        _no_more(rest)
        return json_body(dispatch.get_event(parse_task_id(task_id)).status.http)


class Get:
    """``GET /get/<task_id>``: the upstream task object plus every route's result."""

    exposed = True

    def GET(self, task_id: str | None = None, *rest: str) -> bytes:
        """Answer the stored event, its status and per-route outcomes."""
        _no_more(rest)
        return json_body(views.describe(dispatch.get_event(parse_task_id(task_id))))


class LineageView:
    """``GET /lineage/<transaction id>``: what produced it and what was produced from it."""

    exposed = True

    def GET(self, transaction: str | None = None, *rest: str) -> bytes:
        """Answer the chain both ways (``history.lineage.to_json``)."""
        _no_more(rest)
        found = lineage.chain(lineage.parse_transaction(transaction))
        return json_body(lineage.to_json(found))


class EventMatch:
    """``/eventmatch``: the caller's subscriptions (create, list, read, update, delete)."""

    exposed = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = policy_from(settings.allowed_target_networks)

    def _user(self) -> str:
        environ = cherrypy.request.wsgi_environ
        header = self.settings.user_header
        raw = environ.get("HTTP_" + header.upper().replace("-", "_"))
        user = user_from_header(header, raw) if raw else self.settings.default_user
        if not user:
            raise AuthenticationRequiredError(f"the {header} header is required to name the user")
        return str(user)

    def _body(self) -> Any:
        body = read_body(self.settings.max_body_bytes)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidSubscriptionError(f"body is not valid JSON: {exc}") from exc

    def GET(self, key: str | None = None, *rest: str, **params: str) -> bytes:
        """The caller's subscriptions (``[]`` when none), or one of them; ``<uuid>/test``
        dry-runs a saved one's JSONPath over stored events (``?last=&since=&until=&event=``)."""
        testing = key is not None and rest == ("test",)
        if not testing:
            _no_more(rest)
        user = self._user()
        if key is not None and testing:
            return json_body(dryrun.to_json(history_api.dry_run_saved(user, key, params)))
        if params:
            raise NotFoundError(f"no query parameters here: {cherrypy.request.path_info}")
        if key is None:
            return json_body([registry.to_json(s) for s in registry.list_for(user)])
        return json_body(registry.to_json(registry.get(user, key)))

    def POST(self, *vpath: str) -> bytes:
        """Create a subscription; the server picks uuid, user, timestamps and version.
        ``/eventmatch/test`` dry-runs a JSONPath over stored events instead, and
        ``/eventmatch/<uuid>/replay`` sends stored events to that subscription again."""
        if vpath == ("test",):
            self._user()
            return json_body(dryrun.to_json(history_api.dry_run_posted(self._body())))
        if len(vpath) == 2 and vpath[1] == "replay":
            return json_body(history_api.replay_posted(self._user(), vpath[0], self._body()))
        _no_more(vpath)
        created = registry.create(self._user(), self._body(), self.policy)
        return json_body(history_api.with_recent_note(created))

    def PUT(self, key: str | None = None, *rest: str) -> bytes:
        """Update the fields a user may change."""
        _no_more(rest)
        user = self._user()
        if key is None:
            raise NotFoundError("PUT needs a subscription id: /eventmatch/<uuid>")
        updated = registry.update(user, key, self._body(), self.policy)
        return json_body(history_api.with_recent_note(updated))

    def DELETE(self, key: str | None = None, *rest: str) -> bytes:
        """Soft-delete a subscription; 200 with an empty body, as upstream."""
        _no_more(rest)
        user = self._user()
        if key is None:
            raise NotFoundError("DELETE needs a subscription id: /eventmatch/<uuid>")
        registry.delete(user, key)
        return b""


# --- issue 15 (operations): the operator page, /metrics, /healthz, /readyz, /openapi.json ---


def _request_user(settings: Settings) -> str:
    """The user the request's ``USER_HEADER`` names (or ``DEFAULT_USER``).

    Raises:
        AuthenticationRequiredError: neither names one.
    """
    header = settings.user_header
    raw = cherrypy.request.wsgi_environ.get("HTTP_" + header.upper().replace("-", "_"))
    user = user_from_header(header, raw) if raw else settings.default_user
    if not user:
        raise AuthenticationRequiredError(f"the {header} header is required to name the user")
    return str(user)


def _html(text: str) -> bytes:
    cherrypy.response.headers["Content-Type"] = "text/html; charset=utf-8"
    cherrypy.response.headers["Cache-Control"] = "no-store"
    cherrypy.response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the buttons
    cherrypy.response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'"
    )
    return text.encode("utf-8")


class Operator:
    """``/ui/``: the operator page (``/ui/event?q=``, ``/ui/failures?route=``, and POST
    ``/ui/subscriptions/<uuid>/enable|retry``). Logic in ``operations``, HTML in ``pages``."""

    exposed = True

    def __init__(
        self,
        settings: Settings,
        routes: Sequence[str],
        send_deliveries: Callable[[list[int]], object],
    ) -> None:
        self.settings = settings
        self.routes = list(routes)
        self.send_deliveries = send_deliveries

    def _viewer(self) -> operations.Viewer:
        user = _request_user(self.settings)
        return operations.Viewer(user, user in self.settings.admins)

    def GET(self, page: str = "", *rest: str, **params: str) -> bytes:
        """The overview, an event search, or a route's failing events."""
        _no_more(rest)
        viewer = self._viewer()
        if page == "" and not params:
            view = operations.overview(viewer, self.routes)
            return _html(pages.overview_page(view, viewer, operations.form_token(viewer.user)))
        if page == "event" and set(params) <= {"q"}:
            term = str(params.get("q", ""))[:300]
            found = operations.search(viewer, term) if term.strip() else []
            names = operations.subscription_names_of(found)
            return _html(pages.event_page(term, found, names, viewer))
        if page == "failures" and set(params) == {"route"}:
            route = str(params["route"])
            return _html(
                pages.failures_page(route, operations.failing_events(viewer, route), viewer)
            )
        raise NotFoundError(f"no such page: {cherrypy.request.path_info}")

    def POST(self, *vpath: str, **params: str) -> bytes:
        """Re-enable a subscription or retry its dead deliveries, then back to the overview."""
        if len(vpath) != 3 or vpath[0] != "subscriptions" or vpath[2] not in ("enable", "retry"):
            raise NotFoundError(f"no such action: {cherrypy.request.path_info}")
        viewer = self._viewer()
        headers = cherrypy.request.headers
        token = params.get("token")
        operations.check_form(
            viewer.user,
            token if isinstance(token, str) else None,
            headers.get("Origin"),
            headers.get("Referer"),
            headers.get("Host", ""),
        )
        if vpath[2] == "enable":
            operations.enable(viewer, vpath[1])
        else:
            operations.retry_dead(viewer, vpath[1], self.send_deliveries)
        raise cherrypy.HTTPRedirect(f"/ui/#sub-{vpath[1]}", 303)


class Metrics:
    """``GET /metrics``: the Prometheus text format (``metrics.exposition``)."""

    exposed = True

    def GET(self, *rest: str) -> bytes:
        """Every process's counters and the database's queue gauges."""
        _no_more(rest)
        cherrypy.response.headers["Content-Type"] = metrics.CONTENT_TYPE
        return metrics.exposition(operations.queue_gauges)


class Health:
    """``GET /healthz``: the process is up (touches nothing else)."""

    exposed = True

    def GET(self, *rest: str) -> bytes:
        """``{"status": "ok"}``."""
        _no_more(rest)
        return json_body({"status": "ok"})


class Ready:
    """``GET /readyz``: the database answers with the current schema and the broker is reachable."""

    exposed = True

    def __init__(self, broker: Callable[[], None] | None) -> None:
        self.broker = broker

    def GET(self, *rest: str) -> bytes:
        """200 with each check "ok", or 503 naming what is not."""
        _no_more(rest)
        checks = operations.readiness(self.broker)
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            cherrypy.response.status = 503
            cherrypy.response.headers["Retry-After"] = RETRY_AFTER
        return json_body({"status": "ok" if ready else "unavailable", "checks": checks})


class OpenAPI:
    """``GET /openapi.json``: the OpenAPI 3.1 document of this HTTP API."""

    exposed = True

    def GET(self, *rest: str) -> bytes:
        """The document (``openapi.document``)."""
        _no_more(rest)
        return json_body(openapi.document())


def operator_mounts(
    settings: Settings,
    routes: Sequence[str],
    send_deliveries: Callable[[list[int]], object],
    broker: Callable[[], None] | None,
) -> dict[str, object]:
    """The operations resources, to mount beside the API (``create_app``'s ``mounts``)."""
    return {
        "ui": Operator(settings, routes, send_deliveries),
        "metrics": Metrics(),
        "healthz": Health(),
        "readyz": Ready(broker),
        "openapi.json": OpenAPI(),
    }


def _no_more(rest: tuple[str, ...]) -> None:
    if rest:
        raise NotFoundError(f"no such path: /{'/'.join(rest)}")


def app_config() -> dict[str, Any]:
    """The CherryPy application config shared by every deployment shape."""
    return {
        "/": {
            "request.dispatch": cherrypy.dispatch.MethodDispatcher(),
            "request.show_tracebacks": False,
            "request.error_response": error_response,
            "error_page.default": json_error_page,
            "hooks.after_error_response": trim_error_body,
            "hooks.before_finalize": trim_error_body,
            "tools.encode.on": True,
            "tools.encode.encoding": "utf-8",
        }
    }


def create_app(
    settings: Settings,
    accept: Accept,
    mounts: dict[str, object] | None = None,
    verify: Verify | None = None,
) -> Receiver:
    """The WSGI application: receiver and status API, plus extra ``mounts`` (e.g. /eventmatch);
    ``verify`` checks every ``POST /receive`` before it is parsed."""
    root = Root({"status": Status(), "get": Get(), "lineage": LineageView(), **(mounts or {})})
    return Receiver(settings, accept, cherrypy.Application(root, "", app_config()), verify)


class MountableReceiver(cherrypy.Application):  # type: ignore[misc]  # CherryPy is untyped
    """A ``Receiver`` as a ``cherrypy.Application``, for code that mounts one itself
    (``cherrypy.tree.mount(application)`` in an upstream 0.2.5 ``__main__.py``)."""

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(receiver.fallback.root, "", app_config())
        self.receiver = receiver

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Serve the request through the receiver (``/receive``) and its API."""
        return self.receiver(environ, start_response)


class JSONErrorRequest(HTTPRequest):
    """CherryPy's server's request, answering malformed HTTP (bad request line, headers or
    Content-Length) with the same JSON error shape as the application."""

    def simple_response(self, status: Any, msg: str = "") -> None:
        """Write a JSON error answer (the server's own, for requests the app never sees)."""
        status = str(status)
        if status[:3] in {"413", "414"}:
            self.close_connection = True
        body = encode_json({"status": status, "message": str(msg or status)})
        head = (
            f"{self.server.protocol} {status}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
        )
        with contextlib.suppress(OSError):  # the client is gone: nothing to answer
            self.conn.wfile.write(head.encode("ISO-8859-1") + b"\r\n" + body)


class JSONErrorConnection(HTTPConnection):
    """A connection of CherryPy's server whose requests answer malformed HTTP as JSON."""

    RequestHandlerClass = JSONErrorRequest


def serve(
    app: Receiver,
    host: str,
    port: int,
    config_file: str | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Run ``app`` on CherryPy's own server until interrupted."""
    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            # Each slow client holds a thread; the socket timeout bounds each silent wait.
            "server.thread_pool": app.settings.server_threads,
            "server.socket_timeout": app.settings.server_socket_timeout,
            "server.socket_queue_size": 128,  # a burst of new clients is not refused
            "engine.autoreload.on": False,
            # Errors and accesses reach the root logger (the CLI configures it); no second copy.
            "log.screen": False,
            "checker.on": False,
        }
    )
    if config_file:
        cherrypy.config.update(config_file)
        app.fallback.merge(config_file)
    cherrypy.tree.graft(app, "")
    server = cherrypy.server
    server.httpserver, server.bind_addr = server.httpserver_from_self()
    server.httpserver.ConnectionClass = JSONErrorConnection
    if on_stop is not None:
        cherrypy.engine.subscribe("stop", on_stop)
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()
    cherrypy.engine.start()
    cherrypy.engine.block()


def stop_serving() -> None:
    """Stop the server ``serve`` runs (from any thread); ``serve`` then returns."""
    cherrypy.engine.exit()
