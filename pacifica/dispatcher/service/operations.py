"""The operator page's logic, framework-free: who sees what, form tokens, the two actions, health.

``web`` has the thin CherryPy resources; ``pages`` draws the HTML. Users named
in ``ADMIN_USERS`` see and act on everything; any other user sees and acts on
their own subscriptions and deliveries only (someone else's is 404, as in the
API). Forms are POSTs carrying a token signed for the user, and must come from
the page's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from pacifica.dispatcher.errors import ForbiddenError, InvalidRequestError, NotFoundError
from pacifica.dispatcher.metrics import QueueGauges
from pacifica.dispatcher.storage import drop_connection, is_unavailable
from pacifica.dispatcher.storage import operations as stored
from pacifica.dispatcher.storage.operations import EventDetail, RouteStats, SubscriptionStats
from pacifica.dispatcher.storage.values import utcnow

SECRET_NAME = "operator-forms"  # noqa: S105 (the name of a key kept in the database)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Viewer:
    """The user looking at the page, and whether they administer the dispatcher."""

    user: str
    admin: bool

    def may_see(self, owner: str) -> bool:
        """True when this viewer may see and act on what ``owner`` owns."""
        return self.admin or owner == self.user


@dataclass(frozen=True)
class Overview:
    """Everything the overview shows, read at one moment."""

    now: datetime
    hour: list[stored.FlowBucket]
    day: list[stored.FlowBucket]
    queue: stored.QueueState
    latency_hour: tuple[float | None, float | None]
    latency_day: tuple[float | None, float | None]
    routes: list[RouteStats]
    subscriptions: list[SubscriptionStats]


def percentiles(sorted_values: Sequence[float]) -> tuple[float | None, float | None]:
    """p50 and p99 (nearest rank) of sorted values; None when there are none."""
    if not sorted_values:
        return None, None
    n = len(sorted_values)
    return sorted_values[(n - 1) // 2], sorted_values[min(n - 1, int(n * 0.99))]


def overview(viewer: Viewer, routes: Sequence[str] = ()) -> Overview:
    """The figures of the overview for this viewer (subscriptions: theirs, or all for admins)."""
    now = utcnow()
    day = stored.event_flow(now - DAY)
    hour_start = now - timedelta(hours=1)
    latencies = stored.latencies(now - DAY)
    return Overview(
        now=now,
        hour=[b for b in day if b.minute >= hour_start - timedelta(minutes=1)],
        day=day,
        queue=stored.queue_state(),
        latency_hour=percentiles(stored.latencies(hour_start)),
        latency_day=percentiles(latencies),
        routes=stored.route_stats(now - DAY, routes),
        subscriptions=stored.subscription_stats(None if viewer.admin else viewer.user, now - DAY),
    )


def visible_detail(
    viewer: Viewer, detail: EventDetail
) -> tuple[EventDetail, dict[uuidlib.UUID, str]]:
    """The part of an event a viewer may see, and the names of its subscriptions.

    Admins see everything; another user sees only their own deliveries, and
    the document and route runs only when one of their subscriptions matched it.

    Raises:
        NotFoundError: the viewer may see nothing of it.
    """
    owners = stored.subscription_users(d.subscription for d in detail.deliveries)
    names = stored.subscription_names(owners)
    if viewer.admin:
        return detail, names
    mine = [d for d in detail.deliveries if owners.get(d.subscription) == viewer.user]
    if not mine:
        raise NotFoundError(f"no event {detail.event.uuid} among your deliveries")
    return EventDetail(detail.event, detail.runs, mine), names


def subscription_names_of(found: Sequence[EventDetail]) -> dict[uuidlib.UUID, str]:
    """The names of the subscriptions these events were delivered to."""
    return stored.subscription_names(d.subscription for e in found for d in e.deliveries)


def search(viewer: Viewer, term: str) -> list[EventDetail]:
    """The events a term (task id, event id or transaction id) names that the viewer may see."""
    found = []
    for event in stored.find_events(term.strip()):
        detail = stored.event_detail(event.uuid)
        if detail is None:
            continue
        try:
            found.append(visible_detail(viewer, detail)[0])
        except NotFoundError:
            continue
    return found


def failing_events(viewer: Viewer, route: str) -> list[uuidlib.UUID]:
    """The most recent events a route failed on (admins only: route results are the operator's).

    Raises:
        NotFoundError: the viewer is not an admin.
    """
    if not viewer.admin:
        raise NotFoundError("route results are shown to ADMIN_USERS only")
    return stored.failed_events(route)


def form_token(user: str) -> str:
    """The token the viewer's forms carry: the user signed with the deployment's shared key."""
    key = stored.shared_secret(SECRET_NAME).encode()
    return hmac.new(key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def check_form(
    user: str, token: str | None, origin: str | None, referer: str | None, host: str
) -> None:
    """Refuse a form POST that another site could have made.

    The browser's ``Origin`` (or, when a browser sends none, ``Referer``) must
    name this server's host, and the token must be the one signed for this user.

    Raises:
        ForbiddenError: it comes from elsewhere, or its token is missing or wrong.
    """
    claimed = origin if origin and origin != "null" else referer
    if not claimed or urlsplit(claimed).netloc.lower() != host.lower():
        raise ForbiddenError("cross-site form refused: Origin/Referer is not this server")
    if not token or not hmac.compare_digest(token, form_token(user)):
        raise ForbiddenError("form token missing or invalid; reload the page")


def subscription_key(viewer: Viewer, key: str) -> uuidlib.UUID:
    """A subscription id the viewer may act on.

    Raises:
        InvalidRequestError: it is not a UUID.
        NotFoundError: there is no such live subscription, or it is someone else's.
    """
    try:
        parsed = uuidlib.UUID(key)
    except ValueError:
        raise InvalidRequestError(f"subscription id {key[:60]!r} is not a UUID") from None
    owner = stored.subscription_owner(parsed)
    if owner is None or not viewer.may_see(owner):
        raise NotFoundError(f"no subscription {parsed}")
    return parsed


def enable(viewer: Viewer, key: str) -> bool:
    """Re-enable a disabled subscription the viewer may act on; False if it was enabled.

    Raises:
        NotFoundError: not the viewer's (and the viewer is no admin), or no such subscription.
    """
    return stored.enable_subscription(subscription_key(viewer, key))


def retry_dead(viewer: Viewer, key: str, send: Callable[[list[int]], object]) -> int:
    """Send a subscription's dead-lettered deliveries again; how many.

    Raises:
        NotFoundError: not the viewer's (and the viewer is no admin), or no such subscription.
    """
    ids = stored.retry_dead(subscription_key(viewer, key))
    if ids:
        send(ids)  # what the broker does not take, the sweeper sends
    return len(ids)


def queue_gauges() -> QueueGauges:
    """The queue's gauges for ``/metrics``, from the database now."""
    state = stored.queue_state()
    return QueueGauges(state.waiting, state.processing, max(state.oldest_age(utcnow()), 0.0))


def readiness(broker: Callable[[], None] | None) -> dict[str, str]:
    """What ``/readyz`` checks: the database (and its schema) and the broker; "ok" or why not."""
    checks: dict[str, str] = {}
    try:
        checks["database"] = (
            "ok" if stored.schema_is_current() else "schema is not current: run db sync"
        )
    except Exception as exc:  # any failure to answer is "not ready", with its reason
        if is_unavailable(exc):
            drop_connection()  # the next request reconnects
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if broker is not None:
        try:
            broker()
            checks["broker"] = "ok"
        except Exception as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
    return checks
