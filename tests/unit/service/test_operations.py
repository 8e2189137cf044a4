"""The operator page, /metrics, /healthz, /readyz and /openapi.json, called in-process."""

from __future__ import annotations

import re
import uuid as uuidlib
from pathlib import Path

import peewee
import pytest
from openapi_spec_validator import validate

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service.openapi import document
from pacifica.dispatcher.service.operations import form_token, percentiles
from pacifica.dispatcher.service.web import create_app, operator_mounts
from pacifica.dispatcher.storage import DeliveryStatus, sync_schema
from pacifica.dispatcher.storage.operations import queue_state, retry_dead
from pacifica.dispatcher.storage.schema import Delivery, EventRecord, Subscription
from pacifica.dispatcher.storage.values import transaction_id_of
from tests.conftest import WSGIClient
from tests.operations_data import Population, populate

ADMIN = {"Http-Remote-User": "root"}
ALICE = {"Http-Remote-User": "alice"}
BOB = {"Http-Remote-User": "bob"}
SAME_SITE = {"Origin": "http://127.0.0.1", "Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def sent() -> list[int]:
    return []


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path, sent: list[int]) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), "ADMIN_USERS": "root, ops"})
    mounts = operator_mounts(settings, ["index", "archive", "never-ran"], sent.extend, None)
    return WSGIClient(create_app(settings, lambda events: [], mounts))


@pytest.fixture
def population(client: WSGIClient) -> Population:
    return populate("http://127.0.0.1:9/hook")


def token_of(page: bytes) -> str:
    found = re.search(rb'name="token" value="([0-9a-f]+)"', page)
    assert found, "the page has a form"
    return found.group(1).decode()


def test_the_openapi_document_is_valid_openapi_3_1(client: WSGIClient) -> None:
    validate(document())
    served = client.get("/openapi.json")
    assert served.status == 200
    assert served.json()["openapi"] == "3.1.0"
    assert {"/receive", "/status/{task_id}", "/get/{task_id}", "/", "/eventmatch"} <= set(
        served.json()["paths"]
    )


def test_admins_see_flow_routes_and_every_subscription(
    client: WSGIClient, population: Population
) -> None:
    page = client.get("/ui/", headers=ADMIN)
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert html.count("<svg") == 2
    assert "<rect" in html
    for text in ("archive feed", "flaky", "old", "bob hook", "never-ran", "ConnectionError"):
        assert text in html
    assert "Retry dead" in html
    assert "Re-enable" in html
    assert "5 deliveries in a row dead-lettered" in html


def test_a_user_sees_only_their_own_subscriptions_and_no_routes(
    client: WSGIClient, population: Population
) -> None:
    html = client.get("/ui/", headers=ALICE).body.decode()
    assert "archive feed" in html
    assert "bob hook" not in html
    assert "ConnectionError" not in html
    assert "archive feed" not in client.get("/ui/", headers=BOB).body.decode()
    assert client.get("/ui/").status == 401


def test_the_subscription_counts_are_exact(client: WSGIClient, population: Population) -> None:
    html = client.get("/ui/", headers=ADMIN).body.decode()
    row = html.split(f'id="sub-{population.alice["flaky"]}"')[1].split("</tr>")[0]
    numbers = [int(n) for n in re.findall(r"<td class=n>(\d+)</td>", row)]
    # 30 events: positions 1, 5, 9… retrying (8), 2, 6, 10… refused (7), the rest delivered (15)
    assert numbers == [15, 8, 0, 7]


def test_the_retry_button_sends_the_dead_delivery_again(
    client: WSGIClient, population: Population, sent: list[int]
) -> None:
    token = token_of(client.get("/ui/", headers=ALICE).body)
    key = population.alice["archive feed"]
    answer = client.post(
        f"/ui/subscriptions/{key}/retry", f"token={token}", headers={**ALICE, **SAME_SITE}
    )
    assert answer.status == 303
    dead = Delivery.get(Delivery.id == sent[0])
    assert (len(sent), dead.status, dead.attempts) == (1, int(DeliveryStatus.PENDING), 0)


def test_a_user_cannot_act_on_someone_elses_subscription(
    client: WSGIClient, population: Population, sent: list[int]
) -> None:
    token = form_token("bob")  # bob's own valid token
    key = population.alice["archive feed"]
    answer = client.post(
        f"/ui/subscriptions/{key}/retry", f"token={token}", headers={**BOB, **SAME_SITE}
    )
    assert answer.status == 404
    assert sent == []


def test_an_admin_re_enables_a_disabled_subscription(
    client: WSGIClient, population: Population
) -> None:
    token = token_of(client.get("/ui/", headers=ADMIN).body)
    key = population.alice["old"]
    answer = client.post(
        f"/ui/subscriptions/{key}/enable", f"token={token}", headers={**ADMIN, **SAME_SITE}
    )
    assert answer.status == 303
    row = Subscription.get(Subscription.uuid == uuidlib.UUID(key))
    assert (row.disabled, row.error, row.failures) == (None, None, 0)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/x-www-form-urlencoded"},  # neither Origin nor Referer
        {
            "Referer": "https://evil.example/page",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    ],
)
def test_a_cross_site_form_is_refused(
    client: WSGIClient, population: Population, sent: list[int], headers: dict[str, str]
) -> None:
    token = token_of(client.get("/ui/", headers=ALICE).body)
    key = population.alice["archive feed"]
    answer = client.post(
        f"/ui/subscriptions/{key}/retry", f"token={token}", headers={**ALICE, **headers}
    )
    assert answer.status == 403
    assert sent == []


def test_a_form_without_the_users_token_is_refused(
    client: WSGIClient, population: Population, sent: list[int]
) -> None:
    bobs = form_token("bob")
    key = population.alice["archive feed"]
    for body in ("", f"token={bobs}"):
        answer = client.post(f"/ui/subscriptions/{key}/retry", body, headers={**ALICE, **SAME_SITE})
        assert answer.status == 403
    assert sent == []


def test_the_event_page_finds_by_task_event_and_transaction_id(
    client: WSGIClient, population: Population
) -> None:
    task_id = population.dead_delivery_event
    for term in (task_id, "ingest-1"):
        html = client.get(f"/ui/event?q={term}", headers=ADMIN).body.decode()
        assert f"Event {task_id}" in html
        assert "Document as received" in html
        assert "DEAD" in html
        assert "archive feed" in html
        assert 'class="tick"' in html
    assert EventRecord.get(EventRecord.uuid == uuidlib.UUID(task_id)).transaction_id is None
    assert (
        transaction_id_of({"data": [{"destinationTable": "Transactions._id", "value": 67}]}) == "67"
    )


def test_a_user_sees_only_their_deliveries_of_an_event(
    client: WSGIClient, population: Population
) -> None:
    html = client.get(f"/ui/event?q={population.dead_delivery_event}", headers=BOB).body.decode()
    assert "bob hook" in html
    assert "archive feed" not in html
    assert client.get("/ui/failures?route=archive", headers=BOB).status == 404
    failing = client.get("/ui/failures?route=archive", headers=ADMIN).body.decode()
    assert failing.count("<li>") == 10


def test_metrics_count_received_events_and_show_the_queue(client: WSGIClient) -> None:
    def value(text: str, name: str) -> float:
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.M)
        return float(found.group(1)) if found else 0.0

    before = client.get("/metrics").body.decode()
    populate("http://127.0.0.1:9/hook", events=6)
    after = client.get("/metrics")
    assert after.headers["Content-Type"].replace(" ", "").startswith("text/plain;version=0.0.4")
    text = after.body.decode()
    finished = 'dispatcher_events_finished_total{status="500"}'
    assert value(text, finished) - value(before, finished) == 2  # transactions 3 and 6
    runs = 'dispatcher_route_runs_total{route="index",status="200"}'
    assert value(text, runs) - value(before, runs) == 6
    assert value(text, "dispatcher_events_waiting") == 3
    assert value(text, "dispatcher_oldest_waiting_event_seconds") >= 0


def test_healthz_and_readyz(client: WSGIClient, sqlite_db: peewee.Database) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok"}}
    sqlite_db.execute_sql('UPDATE "dispatcher_schema" SET "version" = 5')
    answer = client.get("/readyz")
    assert answer.status == 503
    assert "db sync" in answer.json()["checks"]["database"]
    sync_schema(sqlite_db)


def test_queue_state_and_percentiles(population: Population) -> None:
    state = queue_state()
    assert (state.waiting, state.processing) == (3, 0)
    assert state.oldest_waiting is not None
    assert percentiles([]) == (None, None)
    assert percentiles([float(n) for n in range(1, 101)]) == (50.0, 100.0)
    assert retry_dead(uuidlib.UUID(population.bob["bob hook"])) == []
