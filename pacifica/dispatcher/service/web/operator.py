"""The operator's resources: ``/ui/``, ``/metrics``, ``/healthz``, ``/readyz``, ``/openapi.json``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cherrypy

from pacifica.dispatcher import metrics
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import NotFoundError
from pacifica.dispatcher.service import openapi, operations, pages
from pacifica.dispatcher.service.http import RETRY_AFTER
from pacifica.dispatcher.service.web.common import html, json_body, no_more, request_user


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
        user = request_user(self.settings)
        return operations.Viewer(user, user in self.settings.admins)

    def GET(self, page: str = "", *rest: str, **params: str) -> bytes:
        """The overview, an event search, or a route's failing events."""
        no_more(rest)
        viewer = self._viewer()
        if page == "" and not params:
            view = operations.overview(viewer, self.routes)
            return html(pages.overview_page(view, viewer, operations.form_token(viewer.user)))
        if page == "event" and set(params) <= {"q"}:
            term = str(params.get("q", ""))[:300]
            found = operations.search(viewer, term) if term.strip() else []
            names = operations.subscription_names_of(found)
            return html(pages.event_page(term, found, names, viewer))
        if page == "failures" and set(params) == {"route"}:
            route = str(params["route"])
            return html(
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
        no_more(rest)
        cherrypy.response.headers["Content-Type"] = metrics.CONTENT_TYPE
        return metrics.exposition(operations.queue_gauges)


class Health:
    """``GET /healthz``: the process is up (touches nothing else)."""

    exposed = True

    def GET(self, *rest: str) -> bytes:
        """``{"status": "ok"}``."""
        no_more(rest)
        return json_body({"status": "ok"})


class Ready:
    """``GET /readyz``: the database answers with the current schema and the broker is reachable."""

    exposed = True

    def __init__(self, broker: Callable[[], None] | None) -> None:
        self.broker = broker

    def GET(self, *rest: str) -> bytes:
        """200 with each check "ok", or 503 naming what is not."""
        no_more(rest)
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
        no_more(rest)
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
