"""Policy check and webhook delivery: one attempt, its classification, backoff and signing.

``attempt(delivery_id, settings, session)`` is what a delivery task runs: it
leases the delivery, asks the policy service (once it has said yes, it is not
asked again on retries), POSTs the event to the target and decides, in one
place (``decide``), what happens next: delivered, retried later (exponential
backoff with full jitter), refused (policy 4xx; target 4xx other than
408/429) or dead-lettered once the attempts or the age budget run out. The
decision is recorded in one place too: ``storage.deliveries.record_attempt``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from pacifica.dispatcher import metrics
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.events import extension_name
from pacifica.dispatcher.storage import DeliveryStatus, deliveries, utcnow
from pacifica.dispatcher.storage.deliveries import AttemptRecord, DeliveryJob, RequestLog
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.subscriptions import transport
from pacifica.dispatcher.subscriptions.addresses import AddressPolicy, policy_from
from pacifica.dispatcher.subscriptions.registry import SECRET_PREFIX

BACKOFF_CAP = 3600.0
EXCERPT_BYTES = 1024  # of each answer, recorded
RETRYABLE = frozenset({408, 429})
LEASE_MARGIN = 60.0  # seconds a lease outlives an attempt's two deadlines
HOST_BUSY_WAIT = 10.0  # most seconds (plus one) a delivery waits for a busy host's slot


class Verdict(Enum):
    """What an HTTP answer means for a delivery."""

    OK = "ok"
    RETRY = "retry"
    REFUSED = "refused"


def classify_target(status_code: int | None) -> Verdict:
    """2xx delivered; no answer, 408, 429 and 5xx retried; anything else refused."""
    if status_code is None or status_code in RETRYABLE or status_code >= 500:
        return Verdict.RETRY
    return Verdict.OK if 200 <= status_code < 300 else Verdict.REFUSED


def classify_policy(status_code: int | None) -> Verdict:
    """2xx allowed; 4xx refused (as upstream); 5xx or no answer retried."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.OK
    if status_code is not None and 400 <= status_code < 500:
        return Verdict.REFUSED
    return Verdict.RETRY


def backoff_delay(
    attempt: int, base: float, cap: float = BACKOFF_CAP, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before retry number ``attempt`` (1-based): full jitter over ``base * 2**(attempt-1)``."""
    return float(rand() * min(cap, base * 2.0 ** min(attempt - 1, 62)))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def payload(document: Mapping[str, Any], extensions: Mapping[str, Any]) -> tuple[str, bytes]:
    """(Content-Type, body): the event's structured JSON with the subscription's extensions added.

    A 0.1 event gets them merged into ``extensions`` (as upstream); a 1.0 event
    gets them as extension attributes, never replacing the event's own.
    """
    event = dict(document)
    if "cloudEventsVersion" in event:
        event["extensions"] = {**(event.get("extensions") or {}), **extensions}
        kind = "application/json"
    else:
        for name, value in extensions.items():
            event.setdefault(extension_name(name), value)
        kind = "application/cloudevents+json"
    return kind, json.dumps(event, ensure_ascii=False).encode("utf-8")


def target_request(
    subscription: SubscriptionRow, message_id: str, document: Mapping[str, Any], replay: int = 0
) -> dict[str, Any]:
    """Keyword arguments of the ``requests`` POST to a subscription's target; a replayed
    delivery says so in a ``webhook-replay`` header (the replay's id)."""
    kind, body = payload(document, subscription.extensions or {})
    headers = {"Content-Type": kind}
    if replay:
        headers["webhook-replay"] = str(replay)
    auth = subscription.auth or {}
    options: dict[str, Any] = {}
    if auth.get("type") == "basic":
        options["auth"] = (auth["basic"]["username"], auth["basic"]["password"])
    elif auth.get("type") == "header":
        headers["Authorization"] = f"{auth['header']['type']} {auth['header']['credentials']}"
    if subscription.secret:
        timestamp = int(time.time())
        headers["webhook-id"] = message_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = sign(subscription.secret, message_id, timestamp, body)
    return {"url": subscription.target_url, "data": body, "headers": headers, **options}


def post(
    session: requests.Session,
    timeout: float,
    kind: str,
    policy: AddressPolicy | None = None,
    **request: Any,
) -> tuple[RequestLog, float | None]:
    """POST within ``timeout`` seconds in total and describe the outcome, with the answer's
    Retry-After; only the first ``EXCERPT_BYTES`` of the answer are read. Never raises for
    network trouble, and the error never quotes the URL."""
    answer = transport.post(session, timeout, policy, EXCERPT_BYTES, **request)
    excerpt = answer.head.decode("utf-8", "replace")
    logged = RequestLog(kind, answer.status_code, excerpt, answer.duration, answer.error)
    return logged, _retry_after(answer.retry_after)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare for webhooks, and the backoff still applies


def new_session() -> requests.Session:
    """An HTTP session for one worker thread: guarded connections (deadline, address policy)."""
    return transport.guarded(requests.Session())


@dataclass(frozen=True)
class Outcome:
    """Where a delivery stands after an attempt; ``retry_in`` is set when it will run again."""

    status: DeliveryStatus
    retry_in: float | None = None


def host_key(url: str) -> str:
    """The ``host:port`` a target URL reaches (what ``DELIVERY_HOST_LIMIT`` counts)."""
    parsed = urlsplit(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        port = 0
    return f"{(parsed.hostname or '')[:280]}:{port}"


def lease_for(settings: Settings) -> float:
    """Seconds a delivery is leased for one attempt: always longer than the attempt can take.

    An attempt makes at most two requests (policy, target), each cut off by
    ``transport.deadline`` after ``REQUEST_TIMEOUT`` seconds whatever the peer
    does; the margin covers recording the outcome.
    """
    return 2 * settings.request_timeout + LEASE_MARGIN


# Delivery attempts by what they decided, as ``/metrics`` labels them.
ATTEMPT_OUTCOMES = {
    DeliveryStatus.DELIVERED: "delivered",
    DeliveryStatus.PENDING: "retry",
    DeliveryStatus.DEAD: "dead",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.REJECTED: "refused",
    DeliveryStatus.CANCELLED: "cancelled",
}


def attempt(
    delivery_id: int,
    settings: Settings,
    session: requests.Session,
    rand: Callable[[], float] = random.random,
    holder: str | None = None,
) -> Outcome | None:
    """Make one attempt at a delivery and record it; None when it is not due or another worker holds it.

    ``holder`` names the worker making it (a dead worker's lease is given back early).
    """
    lease = lease_for(settings)
    now = utcnow()
    job = deliveries.claim(delivery_id, lease, now, holder)
    if job is None:
        return None
    host = host_key(job.subscription.target_url)
    if not deliveries.take_host_slot(host, job.id, settings.delivery_host_limit, lease, now):
        deliveries.release_claim(job)  # not an attempt: try again when a slot may be free
        wait = 1.0 + rand() * min(settings.request_timeout, HOST_BUSY_WAIT)
        return Outcome(DeliveryStatus.PENDING, wait)
    record, retry_in = decide(job, settings, session, rand)
    deliveries.record_attempt(job, record, settings.disable_after)
    metrics.count_delivery_attempt(ATTEMPT_OUTCOMES[record.status])
    return Outcome(record.status, retry_in)


def decide(
    job: DeliveryJob,
    settings: Settings,
    session: requests.Session,
    rand: Callable[[], float] = random.random,
) -> tuple[AttemptRecord, float | None]:
    """Make the attempt's requests and decide what follows; the seconds until a retry, if any."""
    subscription = job.subscription
    if subscription.deleted is not None or subscription.disabled is not None:
        return AttemptRecord(DeliveryStatus.CANCELLED, error="subscription inactive"), None
    made: list[RequestLog] = []
    if settings.policy_url and classify_policy(job.policy_status) is not Verdict.OK:
        url = f"{str(settings.policy_url).rstrip('/')}/events/{quote(subscription.user, safe='')}"
        asked, retry_after = post(
            session, settings.request_timeout, "policy", None, url=url, json=job.document
        )
        made.append(asked)
        verdict = classify_policy(asked.status_code)
        if verdict is Verdict.REFUSED:
            return AttemptRecord(DeliveryStatus.REJECTED, tuple(made), "refused by policy"), None
        if verdict is Verdict.RETRY:
            return _retry(job, settings, asked, retry_after, made, rand)
    request = target_request(subscription, str(job.uuid), job.document, job.replay)
    policy = policy_from(settings.allowed_target_networks)
    sent, retry_after = post(session, settings.request_timeout, "target", policy, **request)
    made.append(sent)
    verdict = classify_target(sent.status_code)
    if verdict is Verdict.OK:
        return AttemptRecord(DeliveryStatus.DELIVERED, tuple(made)), None
    if verdict is Verdict.REFUSED:
        reason = f"target answered {sent.status_code}"
        failed = AttemptRecord(DeliveryStatus.FAILED, tuple(made), reason, undeliverable=reason)
        return failed, None
    return _retry(job, settings, sent, retry_after, made, rand)


def _retry(
    job: DeliveryJob,
    settings: Settings,
    last: RequestLog,
    retry_after: float | None,
    made: list[RequestLog],
    rand: Callable[[], float],
) -> tuple[AttemptRecord, float | None]:
    reason = last.error or f"answered {last.status_code}"
    delay = backoff_delay(job.attempts, settings.delivery_backoff, rand=rand)
    if retry_after is not None:
        delay = min(max(delay, retry_after), BACKOFF_CAP)
    now = utcnow()
    age = (now - job.budget_start).total_seconds() + delay
    if job.attempts >= settings.delivery_max_attempts or age > settings.delivery_max_age:
        error = f"dead-lettered after {job.attempts} attempt(s): {reason}"
        dead = AttemptRecord(DeliveryStatus.DEAD, tuple(made), error, undeliverable=reason)
        return dead, None
    next_attempt = now + timedelta(seconds=delay)
    return AttemptRecord(DeliveryStatus.PENDING, tuple(made), reason, next_attempt), delay
