"""Why a JSONPath did not match: each kind of false clause, on the shipped real events."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher.history.explain import explain
from pacifica.dispatcher.router import parse_jsonpath, path_matches
from tests import consumer_example
from tests.conftest import LoadJson

REFERENCE_DIR = Path(__file__).resolve().parents[4] / "shared" / "reference"
# The reference consumer example's jsonpath2.txt (../shared/reference/001_*), verbatim.
REFERENCE_JSONPATH = (
    '$[?(@["eventID"] and (@["eventType"] = "org.pacifica.metadata.ingest") and '
    '(@["source"] = "/pacifica/metadata/ingest"))]["data"][*][?((@["destinationTable"] = '
    '"Files") and (@["mimetype"] = "text/plain"))]["_id"]'
)


def why(path: str, document: Any) -> tuple[str, str]:
    explanation = explain(parse_jsonpath(path), document)
    assert not explanation.matched
    return explanation.failed, explanation.reason


def test_the_reference_jsonpath_is_the_reference_documents_own() -> None:
    """The path is the reference's: the copy kept with the consumer example (checked against
    ``../shared/reference/001_*`` too, where that is next to the checkout)."""
    assert consumer_example.JSONPATH.strip() == REFERENCE_JSONPATH
    found = sorted(REFERENCE_DIR.glob("001_*"))
    if found:
        assert REFERENCE_JSONPATH in found[0].read_text(encoding="utf-8")


def test_reference_consumer_jsonpath_on_a_real_metadata_event_names_the_source(
    load_json: LoadJson,
) -> None:
    failed, reason = why(REFERENCE_JSONPATH, load_json("metadata_ingest_event.json"))
    assert failed == '@["source"] = "/pacifica/metadata/ingest"'
    assert reason == (
        '@["source"] = "/pacifica/metadata/ingest" was false: '
        '@["source"] is "http://metadata.pacifica.org/transactions?_id=1"'
    )


def test_reference_consumer_jsonpath_matches_only_the_documents_own_example(
    load_json: LoadJson,
) -> None:
    path = parse_jsonpath(REFERENCE_JSONPATH)
    assert explain(path, load_json("sop_example_event.json")).matched


def test_equality_gives_the_value_the_event_had(load_json: LoadJson) -> None:
    failed, reason = why(
        '$[?(@["eventType"] = "org.pacifica.metadata.orm")]',
        load_json("metadata_ingest_event.json"),
    )
    assert failed == '@["eventType"] = "org.pacifica.metadata.orm"'
    assert reason.endswith('@["eventType"] is "org.pacifica.metadata.ingest"')


def test_and_names_its_first_false_clause(load_json: LoadJson) -> None:
    path = '$[?(@["eventID"] and @["eventType"] = "x" and @["source"] = "y")]'
    failed, _ = why(path, load_json("metadata_ingest_event.json"))
    assert failed == '@["eventType"] = "x"'


def test_or_lists_every_branch(load_json: LoadJson) -> None:
    failed, reason = why(
        '$[?(@["eventType"] = "a" or @["source"] = "b")]', load_json("metadata_ingest_event.json")
    )
    assert failed == '@["eventType"] = "a" or @["source"] = "b"'
    assert "no alternative held" in reason
    assert '@["eventType"] is "org.pacifica.metadata.ingest"' in reason
    assert '@["source"] is "http://metadata.pacifica.org/transactions?_id=1"' in reason


def test_not_says_what_held(load_json: LoadJson) -> None:
    failed, reason = why('$[?(not @["eventID"])]', load_json("metadata_ingest_event.json"))
    assert failed == 'not @["eventID"]'
    assert (
        reason
        == 'not @["eventID"] was false: @["eventID"] holds (@["eventID"] is "metadata.ingest.1")'
    )


def test_missing_key_lists_the_keys_there_are(load_json: LoadJson) -> None:
    failed, reason = why('$[?(@["subject"] = "x")]', load_json("metadata_ingest_event.json"))
    assert failed == '@["subject"] = "x"'
    assert (
        '@["subject"] is missing: there is no key "subject" (keys: "cloudEventsVersion"' in reason
    )


def test_path_step_that_found_nothing(load_json: LoadJson) -> None:
    failed, reason = why('$["extensions"]["owner"]', load_json("metadata_ingest_event.json"))
    assert failed == '$["extensions"]["owner"]'
    assert (
        reason
        == '$["extensions"]["owner"] found nothing: at $["extensions"], there is no key "owner" (keys: none)'
    )


def test_empty_array_filter_says_no_element_and_the_values_seen(load_json: LoadJson) -> None:
    failed, reason = why(
        '$["data"][*][?(@["destinationTable"] = "File")]', load_json("metadata_ingest_event.json")
    )
    assert failed == '@["destinationTable"] = "File"'
    assert reason.startswith(
        '$["data"][*] has no element with @["destinationTable"] = "File": of 7 element(s)'
    )
    assert '"Transactions.submitter"' in reason
    assert '"Files"' in reason


def test_wrong_type_is_named(load_json: LoadJson) -> None:
    event = load_json("metadata_ingest_event.json")
    _, reason = why('$["data"][*][?(@["value"] = "10")]', event)
    assert "(a number, not a string)" in reason
    _, reason = why('$[?(@["eventType"] > 3)]', event)
    assert reason.endswith("(a string; > compares numbers only)")
    _, reason = why('$["data"]["value"]', event)
    assert reason.endswith('there is an array, not an object with key "value"')
    _, reason = why('$["data"][9]', event)
    assert reason.endswith("no index 9: the array has 7 element(s)")


PATHS = [
    REFERENCE_JSONPATH,
    '$["data"][*][?(@["destinationTable"] = "Files")]["_id"]',
    '$["data"][*][?(@["destinationTable"] = "Files" and @["mimetype"] = "text/plain")]',
    '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]',
    '$[?(@["cloudEventsVersion"] = "0.1" or @["specversion"] = "1.0")]["data"][0]',
    '$[?(not @["extensions"])]',
    '$["data"][-1]["value"]',
    '$..[?(@["size"] > 1000)]',
    '$..["hashsum"]',
    '$["data"][*][?(@["value"] >= 10)]',
    '$["data"][*][?(@["key"] != "run_tag")]["key"]',
    '$["data"][1:3]',
    '$["data"][*]["name"][length()]',
    '$[?(@["data"][*]["destinationTable"] = "Files")]',
    '$["extensions"][*]',
]
EVENTS = [
    "metadata_ingest_event.json",
    "metadata_orm_event.json",
    "notifications_events.json",
    "sop_example_event.json",
]


@pytest.mark.parametrize(("path", "name"), list(itertools.product(PATHS, EVENTS)))
def test_explanation_agrees_with_the_router(path: str, name: str, load_json: LoadJson) -> None:
    compiled = parse_jsonpath(path)
    document = load_json(name)
    explanation = explain(compiled, document)
    assert explanation.matched == path_matches(compiled, document)
    assert explanation.matched or explanation.reason
