"""Policy check and webhook delivery: one attempt, its classification, backoff and signing.

``attempt(delivery_id, settings, session)`` is what a delivery task runs: it
leases the delivery, asks the policy service (once it has said yes, it is not
asked again on retries), POSTs the event to the target, logs each request and
decides what happens next: delivered, retried later (exponential backoff with
full jitter), refused (policy 4xx; target 4xx other than 408/429) or
dead-lettered once the attempts or the age budget run out.
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

import requests

from pacifica.dispatcher import delivery_log
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.delivery_log import DeliveryResult
from pacifica.dispatcher.events import extension_name
from pacifica.dispatcher.storage import Delivery, DeliveryStatus, Subscription, utcnow
from pacifica.dispatcher.subscriptions import SECRET_PREFIX

BACKOFF_CAP = 3600.0
RETRYABLE = frozenset({408, 429})


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
    subscription: Subscription, message_id: str, document: Mapping[str, Any]
) -> dict[str, Any]:
    """Keyword arguments of the ``requests`` POST to a subscription's target."""
    kind, body = payload(document, subscription.extensions or {})
    headers = {"Content-Type": kind}
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


def post(session: requests.Session, timeout: float, **request: Any) -> DeliveryResult:
    """POST and describe the outcome; never raises for network trouble."""
    started = time.monotonic()
    try:
        response = session.post(timeout=timeout, allow_redirects=False, **request)
    except requests.RequestException as exc:
        return DeliveryResult(None, "", time.monotonic() - started, f"{type(exc).__name__}: {exc}")
    excerpt = response.content[: delivery_log.EXCERPT_BYTES].decode("utf-8", "replace")
    return DeliveryResult(
        response.status_code,
        excerpt,
        time.monotonic() - started,
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare for webhooks, and the backoff still applies


def new_session() -> requests.Session:
    """An HTTP session for one worker process (connections to targets are reused)."""
    return requests.Session()


@dataclass(frozen=True)
class Outcome:
    """Where a delivery stands after an attempt; ``retry_in`` is set when it will run again."""

    status: DeliveryStatus
    retry_in: float | None = None


def attempt(
    delivery_id: int,
    settings: Settings,
    session: requests.Session,
    rand: Callable[[], float] = random.random,
) -> Outcome | None:
    """Make one attempt at a delivery; None when it is not due or another worker holds it."""
    lease = 2 * settings.request_timeout + 60
    delivery = delivery_log.claim(delivery_id, lease, utcnow())
    if delivery is None:
        return None
    subscription: Subscription = delivery.subscription
    if subscription.deleted is not None or subscription.disabled is not None:
        delivery_log.save(delivery, DeliveryStatus.CANCELLED, error="subscription inactive")
        return Outcome(DeliveryStatus.CANCELLED)
    if settings.policy_url and classify_policy(delivery.policy_status) is not Verdict.OK:
        refused_or_retry = _check_policy(delivery, subscription, settings, session, rand)
        if refused_or_retry is not None:
            return refused_or_retry
    return _deliver(delivery, subscription, settings, session, rand)


def _check_policy(
    delivery: Delivery,
    subscription: Subscription,
    settings: Settings,
    session: requests.Session,
    rand: Callable[[], float],
) -> Outcome | None:
    """Ask the policy service; None means allowed (go on to the target)."""
    url = f"{str(settings.policy_url).rstrip('/')}/events/{subscription.user}"
    result = post(session, settings.request_timeout, url=url, json=delivery.event.document)
    delivery_log.record_attempt(delivery, "policy", result)
    verdict = classify_policy(result.status_code)
    fields = {"policy_status": result.status_code, "policy_body": result.excerpt}
    if verdict is Verdict.REFUSED:
        delivery_log.save(delivery, DeliveryStatus.REJECTED, error="refused by policy", **fields)
        return Outcome(DeliveryStatus.REJECTED)
    if verdict is Verdict.RETRY:
        return _retry(delivery, subscription, settings, result, fields, rand)
    delivery_log.note_policy(delivery, result)
    return None


def _deliver(
    delivery: Delivery,
    subscription: Subscription,
    settings: Settings,
    session: requests.Session,
    rand: Callable[[], float],
) -> Outcome:
    request = target_request(subscription, str(delivery.uuid), delivery.event.document)
    result = post(session, settings.request_timeout, **request)
    delivery_log.record_attempt(delivery, "target", result)
    fields = {"target_status": result.status_code, "target_body": result.excerpt}
    verdict = classify_target(result.status_code)
    if verdict is Verdict.OK:
        delivery_log.save(delivery, DeliveryStatus.DELIVERED, error=None, **fields)
        delivery_log.note_delivered(subscription)
        return Outcome(DeliveryStatus.DELIVERED)
    if verdict is Verdict.REFUSED:
        reason = f"target answered {result.status_code}"
        delivery_log.save(delivery, DeliveryStatus.FAILED, error=reason, **fields)
        delivery_log.note_undeliverable(subscription, reason, settings.disable_after)
        return Outcome(DeliveryStatus.FAILED)
    return _retry(delivery, subscription, settings, result, fields, rand)


def _retry(
    delivery: Delivery,
    subscription: Subscription,
    settings: Settings,
    result: DeliveryResult,
    fields: dict[str, Any],
    rand: Callable[[], float],
) -> Outcome:
    reason = result.error or f"answered {result.status_code}"
    delay = backoff_delay(delivery.attempts, settings.delivery_backoff, rand=rand)
    if result.retry_after is not None:
        delay = min(max(delay, result.retry_after), BACKOFF_CAP)
    now = utcnow()
    age = (now - delivery.budget_start).total_seconds() + delay
    if delivery.attempts >= settings.delivery_max_attempts or age > settings.delivery_max_age:
        error = f"dead-lettered after {delivery.attempts} attempt(s): {reason}"
        delivery_log.save(delivery, DeliveryStatus.DEAD, error=error, **fields)
        delivery_log.note_undeliverable(subscription, reason, settings.disable_after)
        return Outcome(DeliveryStatus.DEAD)
    next_attempt = now + timedelta(seconds=delay)
    delivery_log.save(
        delivery, DeliveryStatus.PENDING, next_attempt=next_attempt, error=reason, **fields
    )
    return Outcome(DeliveryStatus.PENDING, delay)
