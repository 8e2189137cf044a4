"""CloudEvents parsing and serialisation: every accepted form, every rejection."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from pacifica.dispatcher.errors import InvalidEventError, UnsupportedContentTypeError
from pacifica.dispatcher.events import (
    parse_document,
    parse_http,
    to_binary,
    to_document,
    to_structured,
)
from tests.conftest import LoadJson

JSON = {"Content-Type": "application/json"}


def v1(**overrides: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "e-1", "type": "org.example.test", "source": "/test"}
    event.update(overrides)
    return event


def test_real_metadata_event_maps_legacy_attributes_to_cloudevents_1(load_json: LoadJson) -> None:
    body = json.dumps(load_json("metadata_ingest_event.json")).encode()
    [received] = parse_http(JSON, body)
    event = received.event
    assert event.get_id() == "metadata.ingest.1"
    assert event.get_type() == "org.pacifica.metadata.ingest"
    assert event.get_source() == "http://metadata.pacifica.org/transactions?_id=1"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_time() == datetime(2026, 11, 23, 8, 21, 7, tzinfo=timezone.utc)
    data = event.get_data()
    assert isinstance(data, list)  # cloudevents annotates data as a dict, str or bytes
    assert data[-1] == {"destinationTable": "Transactions._id", "value": 1}
    assert received.document["eventType"] == "org.pacifica.metadata.ingest"
    assert received.specversion == "0.1"


def test_notifications_test_event_keeps_non_ascii_values_and_extension(load_json: LoadJson) -> None:
    body = json.dumps(load_json("notifications_events.json"), ensure_ascii=False).encode()
    [received] = parse_http({"Content-Type": "application/cloudevents+json; charset=utf-8"}, body)
    assert received.event.get_extension("comexampleextension") == "value"
    data = received.event.get_data()
    assert isinstance(data, list)  # cloudevents annotates data as a dict, str or bytes
    assert data[2]["value"] == "1236é"
    assert received.event.get_time() == datetime(2018, 4, 5, 17, 31, tzinfo=timezone.utc)


def test_legacy_event_type_version_and_schema_url_become_attributes() -> None:
    document = {
        "cloudEventsVersion": "0.1",
        "eventID": "1",
        "eventType": "t",
        "source": "s",
        "eventTypeVersion": "2",
        "schemaURL": "http://schema.example/x",
    }
    event = parse_document(document).event
    assert event.get_extension("eventtypeversion") == "2"
    assert event.get_dataschema() == "http://schema.example/x"


def test_legacy_json_string_data_is_decoded() -> None:
    document = {
        "cloudEventsVersion": "0.1",
        "eventID": "1",
        "eventType": "t",
        "source": "s",
        "contentType": "application/json",
        "data": '[{"a": 1}]',
    }
    data: object = parse_document(document).event.get_data()  # annotated dict, str or bytes
    assert data == [{"a": 1}]


def test_structured_1_0_event_is_matched_as_received() -> None:
    document = v1(time="2024-01-02T03:04:05Z", data={"k": [1, 2]}, myext="x")
    [received] = parse_http(
        {"Content-Type": "application/cloudevents+json"}, json.dumps(document).encode()
    )
    assert received.document == document
    assert received.event.get_extension("myext") == "x"
    assert received.event.get_data() == {"k": [1, 2]}


def test_plain_json_body_with_1_0_attributes_is_accepted() -> None:
    [received] = parse_http(JSON, json.dumps(v1()).encode())
    assert received.id == "e-1"
    assert received.time is None


def test_data_base64_becomes_bytes() -> None:
    [received] = parse_http(JSON, json.dumps(v1(data_base64="AAEC/w==")).encode())
    assert received.event.get_data() == b"\x00\x01\x02\xff"


def test_binary_event_with_list_data_matches_its_structured_equivalent() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-type": "org.example.binary",
        "ce-source": "/binary%20source",
        "ce-time": "2024-01-02T03:04:05Z",
        "Content-Type": "application/json",
    }
    [received] = parse_http(headers, b'[{"destinationTable": "Files", "name": "x"}]')
    assert received.source == "/binary source"
    assert received.document["data"] == [{"destinationTable": "Files", "name": "x"}]
    assert received.document["type"] == "org.example.binary"
    assert received.document["time"] == "2024-01-02T03:04:05Z"


def test_batch_yields_every_event_in_order() -> None:
    batch = [v1(id="1"), v1(id="2"), v1(id="3")]
    received = parse_http(
        {"Content-Type": "application/cloudevents-batch+json"}, json.dumps(batch).encode()
    )
    assert [r.id for r in received] == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got an array"),
        (b'"text"', "must be a JSON object, got a string"),
        (json.dumps({"id": "1", "type": "t", "source": "s"}).encode(), "missing 'specversion'"),
        (json.dumps(v1(specversion="0.3")).encode(), "unsupported specversion '0.3'"),
        (json.dumps({k: v for k, v in v1().items() if k != "id"}).encode(), "'id'"),
        (json.dumps(v1(type="")).encode(), "'type' must be a non-empty string"),
        (json.dumps(v1(source=7)).encode(), "'source' must be a non-empty string"),
        (json.dumps(v1(time="yesterday")).encode(), "'time' is not an RFC 3339 time"),
        (json.dumps(v1(BadName="x")).encode(), "BadName"),
        (
            json.dumps({"cloudEventsVersion": "0.1", "eventType": "t", "source": "s"}).encode(),
            "missing required attribute 'eventID'",
        ),
        (
            json.dumps(
                {"cloudEventsVersion": "0.1", "eventID": 5, "eventType": "t", "source": "s"}
            ).encode(),
            "'eventID' must be a non-empty string",
        ),
        (
            json.dumps(
                {
                    "cloudEventsVersion": "0.1",
                    "eventID": "1",
                    "eventType": "t",
                    "source": "s",
                    "eventTime": "2020-13-45",
                }
            ).encode(),
            "'eventTime' is not an RFC 3339 time",
        ),
    ],
)
def test_invalid_events_are_rejected_with_a_message_naming_the_problem(
    body: bytes, message: str
) -> None:
    with pytest.raises(InvalidEventError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_http(JSON, body)


def test_unsupported_content_type_is_rejected() -> None:
    with pytest.raises(UnsupportedContentTypeError, match="'text/plain'"):
        parse_http({"Content-Type": "text/plain"}, b"hello")


def test_missing_content_type_is_rejected() -> None:
    with pytest.raises(UnsupportedContentTypeError, match="Content-Type is missing"):
        parse_http({}, json.dumps(v1()).encode())


def test_batch_error_names_the_event_index() -> None:
    body = json.dumps([v1(), {"specversion": "1.0"}]).encode()
    with pytest.raises(InvalidEventError, match="event 1:"):
        parse_http({"Content-Type": "application/cloudevents-batch+json"}, body)


def test_empty_batch_is_rejected() -> None:
    with pytest.raises(InvalidEventError, match="at least one event"):
        parse_http({"Content-Type": "application/cloudevents-batch+json"}, b"[]")


def test_binary_event_without_id_is_rejected() -> None:
    headers = {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s"}
    with pytest.raises(InvalidEventError, match="ce-id"):
        parse_http(headers, b"")


def test_binary_round_trip_keeps_list_data_as_json(load_json: LoadJson) -> None:
    original = parse_document(load_json("metadata_ingest_event.json")).event
    headers, body = to_binary(original)
    assert json.loads(body) == original.get_data()
    [again] = parse_http(headers, body)
    assert again.event.get_data() == original.get_data()
    assert again.event.get_id() == original.get_id()
    assert again.event.get_time() == original.get_time()


def test_structured_round_trip_keeps_attributes_and_data(load_json: LoadJson) -> None:
    original = parse_document(load_json("notifications_events.json")).event
    headers, body = to_structured(original)
    assert headers["content-type"] == "application/cloudevents+json"
    [again] = parse_http(headers, body)
    assert again.event.get_attributes() == original.get_attributes()
    assert again.event.get_data() == original.get_data()
    assert to_document(original)["comexampleextension"] == "value"
