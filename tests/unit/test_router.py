"""Router: ordering, fan-out, first-match compatibility and JSONPath errors."""

from __future__ import annotations

import pathlib

import pytest
from jsonpath2.path import Path

from pacifica.dispatcher import (
    ExceptionEventHandler,
    InvalidRouteError,
    NoopEventHandler,
    NoRouteError,
    RouteNotFoundRouterError,
    Router,
)
from pacifica.dispatcher.testing import RecordingEventHandler, event_from_dict, run_router
from tests.conftest import LoadJson

INGEST = '$[?(@["eventType"] = "org.pacifica.metadata.ingest")]'


def test_empty_router_raises_no_route_error_which_is_an_exception() -> None:
    with pytest.raises(RouteNotFoundRouterError) as info:
        Router()(None)
    assert isinstance(info.value, Exception)
    assert str(info.value) == "route not found"


def test_match_yields_every_matching_route_in_insertion_order(load_json: LoadJson) -> None:
    router = Router()
    router.add_route('$[?(@["eventType"] = "nope")]', NoopEventHandler(), name="never")
    first = router.add_route(INGEST, NoopEventHandler(), name="first")
    second = router.add_route(Path.parse_str("$"), NoopEventHandler(), name="second")
    document = load_json("metadata_ingest_event.json")
    assert list(router.match(document)) == [first, second]
    assert router.match_first_or_raise(document) is first


def test_calling_the_router_runs_only_the_first_match(load_json: LoadJson) -> None:
    first, second = RecordingEventHandler(), RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, first)
    router.add_route(INGEST, second)
    # The upstream API returns nothing here; the test pins that, so it uses the None result.
    assert router(load_json("metadata_ingest_event.json")) is None  # type: ignore[func-returns-value]
    assert len(first.events) == 1
    assert second.events == []


def test_dispatch_runs_every_match_and_one_failure_does_not_stop_the_others(
    load_json: LoadJson,
) -> None:
    ok = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, ExceptionEventHandler(), name="boom")
    router.add_route(INGEST, ok, name="ok")
    report = run_router(router, load_json("metadata_ingest_event.json"))
    assert report.route_names == ["boom", "ok"]
    assert [o.route.name for o in report.failed] == ["boom"]
    assert "ExceptionEventHandler has raised" in report.failed[0].traceback
    assert ok.events[0].get_id() == "metadata.ingest.1"


def test_handler_receives_a_cloudevent_with_mapped_attributes(load_json: LoadJson) -> None:
    handler = RecordingEventHandler()
    router = Router()
    router.add_route(INGEST, handler)
    router(load_json("metadata_ingest_event.json"))
    assert handler.events[0].get_type() == "org.pacifica.metadata.ingest"


def test_bad_jsonpath_names_the_route_and_quotes_the_parser() -> None:
    with pytest.raises(InvalidRouteError, match=r"my-route: invalid JSONPath '\$\[': line 1"):
        Router().add_route("$[", NoopEventHandler(), name="my-route")


def test_jsonpath_can_come_from_a_file(tmp_path: pathlib.Path, load_json: LoadJson) -> None:
    path_file = tmp_path / "ingest.txt"
    path_file.write_text(INGEST + "\n", encoding="utf-8")
    router = Router()
    router.add_route(path_file, NoopEventHandler())
    router.add_route(str(path_file), NoopEventHandler())
    assert len(list(router.match(load_json("metadata_ingest_event.json")))) == 2


def test_bad_jsonpath_in_a_file_names_the_file(tmp_path: pathlib.Path) -> None:
    path_file = tmp_path / "bad.txt"
    path_file.write_text("$[?(", encoding="utf-8")
    with pytest.raises(InvalidRouteError, match=r"bad\.txt"):
        Router().add_route(path_file, NoopEventHandler())


def test_default_route_names_are_unique_and_explicit_duplicates_are_refused() -> None:
    router = Router()
    assert router.add_route("$", NoopEventHandler()).name == "NoopEventHandler"
    assert router.add_route("$", NoopEventHandler()).name == "NoopEventHandler-2"
    with pytest.raises(InvalidRouteError, match="already exists"):
        router.add_route("$", NoopEventHandler(), name="NoopEventHandler")


def test_existing_pacifica_jsonpaths_match_data_conditions(load_json: LoadJson) -> None:
    router = Router()
    router.add_route(
        '$[?(@["data"][*][?(@["destinationTable"] = "Files" and @["subdir"] = "sub")])]',
        NoopEventHandler(),
    )
    assert list(router.match(load_json("metadata_ingest_event.json")))
    assert not list(router.match(load_json("notifications_events.json")))


def test_route_can_be_called_with_a_received_event(load_json: LoadJson) -> None:
    handler = RecordingEventHandler()
    route = Router().add_route("$", handler)
    route(event_from_dict(load_json("sop_example_event.json")))
    assert handler.events[0].get_id() == "C234-1234-1234"


def test_no_route_error_carries_the_event_data() -> None:
    with pytest.raises(NoRouteError) as info:
        Router().match_first_or_raise({"x": 1})
    assert info.value.event_data == {"x": 1}
