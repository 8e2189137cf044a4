"""A database in several states for the operator page's tests and screenshot: events routed and
failed, subscriptions delivering, retrying, dead, refused and disabled, for two users."""

from __future__ import annotations

import json
import uuid as uuidlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.events import parse_http
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.storage import DeliveryStatus, deliveries, utcnow
from pacifica.dispatcher.storage.deliveries import AttemptRecord, RequestLog
from pacifica.dispatcher.storage.schema import Delivery
from pacifica.dispatcher.storage.subscriptions import disable_subscription
from pacifica.dispatcher.subscriptions import registry
from pacifica.dispatcher.subscriptions.addresses import policy_from

INGEST = '$[?(@["type"] = "org.pacifica.metadata.ingest")]'


class Archiver(EventHandler):
    """Fails on every third transaction, as a flaky archive would."""

    def handle(self, event: Any) -> None:
        if int(event.get_data()["transaction"]) % 3 == 0:
            raise ConnectionError("archive at 10.0.0.7 refused the connection")


class Indexer(EventHandler):
    """Always succeeds."""

    def handle(self, event: Any) -> None:
        del event


def ops_router() -> Router:
    """Two routes: ``index`` always succeeds, ``archive`` fails on a third of the events."""
    router = Router()
    router.add_route(INGEST, Indexer(), name="index")
    router.add_route(INGEST, Archiver(), name="archive")
    return router


def document(number: int) -> dict[str, Any]:
    """A CloudEvents 1.0 ingest event about transaction ``number``."""
    return {
        "specversion": "1.0",
        "id": f"ingest-{number}",
        "type": "org.pacifica.metadata.ingest",
        "source": "/pacifica/metadata",
        "datacontenttype": "application/json",
        "data": {"transaction": number},
    }


def receive(numbers: range) -> list[str]:
    """Store events for these transaction numbers; their task ids."""
    received = [
        e
        for n in numbers
        for e in parse_http({"Content-Type": "application/json"}, json.dumps(document(n)).encode())
    ]
    return [a.uuid for a in dispatch.accept(received)]


@dataclass(frozen=True)
class Population:
    """What ``populate`` made."""

    task_ids: list[str]
    alice: dict[str, str]  # subscription name -> uuid
    bob: dict[str, str]
    dead_delivery_event: str


def subscribe(user: str, name: str, target: str) -> str:
    """A subscription to every ingest event; its uuid."""
    body = {"name": name, "jsonpath": INGEST, "target_url": target}
    return str(registry.create(user, body, policy_from("127.0.0.0/8"))["uuid"])


def attempt(delivery_id: int, status: DeliveryStatus, code: int | None, error: str | None) -> None:
    """Record one attempt of a delivery ending in ``status``."""
    job = deliveries.claim(delivery_id, 60, utcnow() + timedelta(hours=2))
    assert job is not None
    retry = utcnow() + timedelta(minutes=5) if status is DeliveryStatus.PENDING else None
    request = RequestLog("target", code, "", 0.05, None if code else error)
    deliveries.record_attempt(job, AttemptRecord(status, (request,), error, retry), 5)


def populate(target: str, events: int = 30) -> Population:
    """Events processed by ``ops_router`` and deliveries in every state to ``target``.

    Alice's "archive feed" has one dead delivery (of the first event), her
    "flaky" one is retrying and refused, her "old" one is disabled; Bob's
    "bob hook" delivered everything.
    """
    ids = receive(range(1, events + 1))
    dispatch.process_many(ids, ops_router())
    receive(range(events + 1, events + 4))  # still waiting
    alice = {n: subscribe("alice", n, target) for n in ("archive feed", "flaky", "old")}
    bob = {"bob hook": subscribe("bob", "bob hook", target)}
    for position, task_id in enumerate(ids):
        key = uuidlib.UUID(task_id)
        subscribed = [alice["archive feed"], alice["flaky"], bob["bob hook"]]
        deliveries.record_matches(key, subscribed)
        made = {
            s: Delivery.get((Delivery.event == key) & (Delivery.subscription == s)).id
            for s in subscribed
        }
        attempt(made[bob["bob hook"]], DeliveryStatus.DELIVERED, 200, None)
        if position == 0:
            attempt(made[alice["archive feed"]], DeliveryStatus.DEAD, 503, "503 from target")
        else:
            attempt(made[alice["archive feed"]], DeliveryStatus.DELIVERED, 204, None)
        if position % 4 == 1:
            attempt(made[alice["flaky"]], DeliveryStatus.PENDING, None, "could not connect")
        elif position % 4 == 2:
            attempt(made[alice["flaky"]], DeliveryStatus.REJECTED, 403, "refused by policy")
        else:
            attempt(made[alice["flaky"]], DeliveryStatus.DELIVERED, 200, None)
    disable_subscription(uuidlib.UUID(alice["old"]), "5 deliveries in a row dead-lettered")
    return Population(ids, alice, bob, ids[0])
