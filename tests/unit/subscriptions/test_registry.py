"""The /eventmatch API in-process: reference shapes, access rules, validation, masking."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import peewee
import pytest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service.web import EventMatch, create_app
from pacifica.dispatcher.storage.schema import Subscription, SubscriptionRevision
from pacifica.dispatcher.subscriptions.registry import MASK
from tests.conftest import WSGIClient

ALICE = {"Http-Remote-User": "dmlb2001"}
BOB = {"Http-Remote-User": "bob"}
REFERENCE_KEYS = {
    "user",
    "updated",
    "uuid",
    "deleted",
    "version",
    "jsonpath",
    "disabled",
    "created",
    "name",
    "extensions",
    "auth",
    "target_url",
    "error",
}


def make_client(tmp_path: Path, **env: str) -> WSGIClient:
    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path), **env})
    # These tests only call /eventmatch: the receiver's intake accepts nothing.
    return WSGIClient(create_app(settings, lambda events: [], {"eventmatch": EventMatch(settings)}))


@pytest.fixture
def client(sqlite_db: peewee.Database, tmp_path: Path) -> WSGIClient:
    return make_client(tmp_path)


def create(
    client: WSGIClient, body: dict[str, Any], headers: dict[str, str] = ALICE
) -> dict[str, Any]:
    response = client.request("POST", "/eventmatch", body, headers=headers)
    assert response.status == 200, response.body
    created: dict[str, Any] = response.json()
    return created


def test_reference_create_example_answers_the_reference_shape(client: WSGIClient) -> None:
    body = {
        "name": "My Event Match",
        "jsonpath": "data",
        "target_url": "http://www.example.com/recieve",
    }
    created = create(client, body)
    assert set(created) >= REFERENCE_KEYS
    assert created["user"] == "dmlb2001"
    assert created["version"] == "v0.1"
    assert (created["deleted"], created["disabled"], created["error"]) == (None, None, None)
    assert (created["extensions"], created["auth"]) == ({}, {})
    assert created["name"] == "My Event Match"
    assert created["jsonpath"] == "data"
    assert created["target_url"] == "http://www.example.com/recieve"
    assert created["created"] == created["updated"]
    uuid.UUID(created["uuid"])


def test_reference_get_put_delete_examples(client: WSGIClient) -> None:
    created = create(
        client,
        {
            "name": "My Event Match",
            "jsonpath": "data",
            "target_url": "http://www.example.com/recieve",
        },
    )
    path = f"/eventmatch/{created['uuid']}"
    got = client.get(path, headers={**ALICE, "Content-Type": "application/json"})
    assert (got.status, got.json()) == (200, created)
    put = client.request(
        "PUT", path, {"target_url": "http://api.example.com/receive"}, headers=ALICE
    )
    assert put.status == 200
    assert put.json()["target_url"] == "http://api.example.com/receive"
    assert put.json()["updated"] > created["updated"]
    deleted = client.request("DELETE", path, headers=ALICE)
    assert (deleted.status, deleted.body) == (200, b"")
    assert client.get(path, headers=ALICE).status == 404
    assert client.get("/eventmatch", headers=ALICE).json() == []


def test_basic_auth_password_is_stored_but_masked(client: WSGIClient) -> None:
    auth = {"type": "basic", "basic": {"username": "myusername", "password": "password"}}
    created = create(
        client,
        {"name": "n", "jsonpath": "data", "auth": auth, "target_url": "http://example.com/r"},
    )
    assert created["auth"] == {
        "type": "basic",
        "basic": {"username": "myusername", "password": MASK},
    }
    assert Subscription.get_by_id(uuid.UUID(created["uuid"])).auth == auth
    listed = client.get("/eventmatch", headers=ALICE).json()
    assert "password" not in str([a for s in listed for a in s["auth"].get("basic", {}).values()])


def test_header_credentials_masked_and_kept_on_get_modify_put(client: WSGIClient) -> None:
    auth = {"type": "header", "header": {"type": "Bearer", "credentials": "s3cret"}}
    created = create(
        client, {"name": "n", "jsonpath": "$", "auth": auth, "target_url": "https://e.org"}
    )
    assert created["auth"]["header"] == {"type": "Bearer", "credentials": MASK}
    edited = {**created, "name": "renamed"}
    put = client.request("PUT", f"/eventmatch/{created['uuid']}", edited, headers=ALICE)
    assert put.status == 200, put.body
    assert Subscription.get_by_id(uuid.UUID(created["uuid"])).auth == auth


def test_generated_signing_secret_is_shown_once(client: WSGIClient) -> None:
    created = create(
        client, {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "secret": True}
    )
    assert created["secret"].startswith("whsec_")
    assert client.get(f"/eventmatch/{created['uuid']}", headers=ALICE).json()["secret"] == MASK


def test_other_users_subscription_is_not_found(client: WSGIClient) -> None:
    created = create(client, {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    path = f"/eventmatch/{created['uuid']}"
    assert client.get(path, headers=BOB).status == 404
    assert client.request("PUT", path, {"name": "mine"}, headers=BOB).status == 404
    assert client.request("DELETE", path, headers=BOB).status == 404
    assert client.get("/eventmatch", headers=BOB).json() == []
    assert client.get(path, headers=ALICE).json()["name"] == "n"


def test_unknown_and_malformed_ids(client: WSGIClient) -> None:
    assert client.get(f"/eventmatch/{uuid.uuid4()}", headers=ALICE).status == 404
    bad = client.get("/eventmatch/1234", headers=ALICE)
    assert bad.status == 400
    assert "1234" in bad.json()["message"]


def test_no_user_is_401_unless_a_default_user_is_set(client: WSGIClient, tmp_path: Path) -> None:
    assert client.get("/eventmatch").status == 401
    defaulted = make_client(tmp_path, DEFAULT_USER="someone")
    response = defaulted.request(
        "POST", "/eventmatch", {"name": "n", "jsonpath": "$", "target_url": "http://e.org"}
    )
    assert response.json()["user"] == "someone"


def test_user_header_name_is_configurable(sqlite_db: peewee.Database, tmp_path: Path) -> None:
    client = make_client(tmp_path, USER_HEADER="X-Remote-User")
    created = create(
        client,
        {"name": "n", "jsonpath": "$", "target_url": "http://e.org"},
        headers={"X-Remote-User": "carol"},
    )
    assert created["user"] == "carol"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"jsonpath": "$", "target_url": "http://e.org"}, "'name'"),
        ({"name": "n", "target_url": "http://e.org"}, "'jsonpath'"),
        ({"name": "n", "jsonpath": "$"}, "'target_url'"),
        ({"name": "n", "jsonpath": "$", "target_url": "ftp://e.org"}, "'target_url'"),
        ({"name": "n", "jsonpath": "$", "target_url": "file:///etc/passwd"}, "'target_url'"),
        ({"name": 5, "jsonpath": "$", "target_url": "http://e.org"}, "'name'"),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "extensions": []},
            "'extensions'",
        ),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "auth": {"type": "oauth"}},
            "'auth.type'",
        ),
        (
            {
                "name": "n",
                "jsonpath": "$",
                "target_url": "http://e.org",
                "auth": {"type": "basic", "basic": {"username": "u"}},
            },
            "'auth.basic.password'",
        ),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "uuid": str(uuid.uuid4())},
            "'uuid'",
        ),
        ({"name": "n", "jsonpath": "$", "target_url": "http://e.org", "user": "root"}, "'user'"),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "version": "v9"},
            "'version'",
        ),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "targetUrl": "x"},
            "'targetUrl'",
        ),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "secret": "short"},
            "'secret'",
        ),
        (
            {"name": "n", "jsonpath": "$", "target_url": "http://e.org", "disabled": "soon"},
            "'disabled'",
        ),
    ],
)
def test_schema_violations_are_400_naming_the_field(
    client: WSGIClient, body: dict[str, Any], named: str
) -> None:
    response = client.request("POST", "/eventmatch", body, headers=ALICE)
    assert response.status == 400
    assert named in response.json()["message"]


def test_bad_jsonpath_is_400_quoting_the_parser(client: WSGIClient) -> None:
    body = {"name": "n", "jsonpath": "$[?(@.a = ", "target_url": "http://e.org"}
    response = client.request("POST", "/eventmatch", body, headers=ALICE)
    assert response.status == 400
    message = response.json()["message"]
    assert "'jsonpath'" in message
    assert "line 1:" in message


def test_non_json_body_is_400(client: WSGIClient) -> None:
    response = client.post(
        "/eventmatch", "{nope", headers={**ALICE, "Content-Type": "application/json"}
    )
    assert response.status == 400


def test_user_cannot_change_read_only_fields_with_put(client: WSGIClient) -> None:
    created = create(client, {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    path = f"/eventmatch/{created['uuid']}"
    response = client.request("PUT", path, {"user": "bob"}, headers=ALICE)
    assert response.status == 400
    assert "'user'" in response.json()["message"]
    assert client.get(path, headers=ALICE).json()["user"] == "dmlb2001"


def test_disabled_null_re_enables_and_clears_the_error(client: WSGIClient) -> None:
    created = create(client, {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    key = uuid.UUID(created["uuid"])
    Subscription.update(disabled=Subscription.created, error="down", failures=5).where(
        Subscription.uuid == key
    ).execute()
    path = f"/eventmatch/{created['uuid']}"
    assert client.get(path, headers=ALICE).json()["disabled"] is not None
    put = client.request("PUT", path, {"disabled": None}, headers=ALICE)
    assert (put.json()["disabled"], put.json()["error"]) == (None, None)
    assert Subscription.get_by_id(key).failures == 0


def test_every_change_bumps_the_revision(client: WSGIClient) -> None:
    def revision() -> int:
        return int(SubscriptionRevision.get_by_id(1).revision)

    start = revision()
    created = create(client, {"name": "n", "jsonpath": "$", "target_url": "http://e.org"})
    client.request("PUT", f"/eventmatch/{created['uuid']}", {"name": "m"}, headers=ALICE)
    client.request("DELETE", f"/eventmatch/{created['uuid']}", headers=ALICE)
    assert revision() == start + 3
