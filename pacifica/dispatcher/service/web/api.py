"""The status and subscription API: ``GET /``, ``/status``, ``/get``, ``/lineage``, ``/eventmatch``,
``/routes/<name>/replay`` and ``/replays``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import cherrypy

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import (
    ForbiddenError,
    InvalidRequestError,
    InvalidSubscriptionError,
    NotFoundError,
)
from pacifica.dispatcher.history import api as history_api
from pacifica.dispatcher.history import dryrun, lineage
from pacifica.dispatcher.service import dispatch, views
from pacifica.dispatcher.service.http import page_arguments, page_cursor, parse_task_id
from pacifica.dispatcher.service.web.common import (
    MISSING,
    json_body,
    no_more,
    read_body,
    request_user,
)
from pacifica.dispatcher.storage import events as stored_events
from pacifica.dispatcher.subscriptions import registry
from pacifica.dispatcher.subscriptions.addresses import policy_from


class Root:
    """``GET /``: the most recent tasks, newest first, paginated; below it, the resources
    in ``routes`` (an explicit table: ``{"status": Status(), …}``)."""

    exposed = True

    def __init__(self, routes: Mapping[str, object]) -> None:
        # Not ``self.routes``: CherryPy looks a path segment up as an attribute first.
        self._resources = dict(routes)

    def _cp_dispatch(self, vpath: list[str]) -> object:
        """The resource for the first path segment (CherryPy's hook for dynamic children)."""
        return self._resources.get(vpath.pop(0), MISSING)

    def GET(self, *vpath: str, **params: str) -> bytes:
        """List recent tasks (``?limit=&offset=``); a ``Link: rel=next`` header pages on by
        cursor (``?after=``: each page costs the same however deep it is)."""
        no_more(vpath)
        limit, offset, after = page_arguments(params)
        found = stored_events.recent(limit=limit + 1, offset=offset, after=after)
        if len(found) > limit:
            last = found[limit - 1]
            cherrypy.response.headers["Link"] = (
                f'</?limit={limit}&after={page_cursor(last.created, last.uuid)}>; rel="next"'
            )
        return json_body([views.summarize(e) for e in found[:limit]])


class Status:
    """``GET /status/<task_id>``: the upstream status string."""

    exposed = True

    def GET(self, task_id: str | None = None, *rest: str) -> bytes:
        """Answer e.g. ``"200 OK"``."""
        no_more(rest)
        return json_body(dispatch.get_event(parse_task_id(task_id)).status.http)


class Get:
    """``GET /get/<task_id>``: the upstream task object plus every route's result."""

    exposed = True

    def GET(self, task_id: str | None = None, *rest: str) -> bytes:
        """Answer the stored event, its status and per-route outcomes."""
        no_more(rest)
        return json_body(views.describe(dispatch.get_event(parse_task_id(task_id))))


class LineageView:
    """``GET /lineage/<transaction id>``: what produced it and what was produced from it."""

    exposed = True

    def GET(self, transaction: str | None = None, *rest: str) -> bytes:
        """Answer the chain both ways (``history.lineage.to_json``)."""
        no_more(rest)
        found = lineage.chain(lineage.parse_transaction(transaction))
        return json_body(lineage.to_json(found))


class EventMatch:
    """``/eventmatch``: the caller's subscriptions (create, list, read, update, delete)."""

    exposed = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = policy_from(settings.allowed_target_networks)

    def _user(self) -> str:
        return request_user(self.settings)

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
            no_more(rest)
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
        no_more(vpath)
        created = registry.create(self._user(), self._body(), self.policy)
        return json_body(history_api.with_recent_note(created))

    def PUT(self, key: str | None = None, *rest: str) -> bytes:
        """Update the fields a user may change."""
        no_more(rest)
        user = self._user()
        if key is None:
            raise NotFoundError("PUT needs a subscription id: /eventmatch/<uuid>")
        updated = registry.update(user, key, self._body(), self.policy)
        return json_body(history_api.with_recent_note(updated))

    def DELETE(self, key: str | None = None, *rest: str) -> bytes:
        """Soft-delete a subscription; 200 with an empty body, as upstream."""
        no_more(rest)
        user = self._user()
        if key is None:
            raise NotFoundError("DELETE needs a subscription id: /eventmatch/<uuid>")
        registry.delete(user, key)
        return b""


class RouteReplays:
    """``POST /routes/<name>/replay``: run a route again on stored events (``ADMIN_USERS``)."""

    exposed = True

    def __init__(self, settings: Settings, routes: Sequence[str]) -> None:
        # Underscored: CherryPy looks the route's name up as an attribute first.
        self._settings = settings
        self._routes = frozenset(routes)

    def POST(self, route: str | None = None, *rest: str) -> bytes:
        """Answer how many runs would go (``dry_run``) or were scheduled, as a replay.

        Raises:
            ForbiddenError: the caller is not in ``ADMIN_USERS`` (route results are the
                operator's).
            NotFoundError: no such route.
        """
        if route is None or rest != ("replay",):
            raise NotFoundError(f"no such resource: {cherrypy.request.path_info[:200]}")
        user = request_user(self._settings)
        if user not in self._settings.admins:
            raise ForbiddenError("route replays are for ADMIN_USERS")
        if route not in self._routes:
            raise NotFoundError(f"no route named {route[:100]!r}")
        body = read_body(self._settings.max_body_bytes)
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidRequestError(f"body is not valid JSON: {exc}") from exc
        return json_body(history_api.route_replay_posted(user, route, parsed))


class Replays:
    """``GET /replays/<id>``: a replay's progress, for whoever asked for it or an admin."""

    exposed = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def GET(self, key: str | None = None, *rest: str) -> bytes:
        """Answer the replay's counts (``history.api.replay_progress``)."""
        no_more(rest)
        user = request_user(self.settings)
        if key is None:
            raise NotFoundError("GET needs a replay id: /replays/<id>")
        return json_body(history_api.replay_progress(user, user in self.settings.admins, key))
