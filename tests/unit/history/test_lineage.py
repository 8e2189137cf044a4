"""Lineage over a two-hop chain with the fake ingest: A -> handler -> B -> another handler -> C.

The real Pacifica stack version is tests/integration/test_lineage_pacifica.py; here uploads go to
``tests/fake_pacifica.FakeIngest`` (its job ids stand for the new transactions' ids).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peewee
import pytest
from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher import cli
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.event_handlers import EventHandler
from pacifica.dispatcher.history.lineage import chain, record_upload
from pacifica.dispatcher.models import Transaction, TransactionKeyValue
from pacifica.dispatcher.router import Router
from pacifica.dispatcher.service import dispatch
from pacifica.dispatcher.service.web import create_app
from pacifica.dispatcher.testing import event_from_dict
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner
from tests.conftest import LoadJson, WSGIClient
from tests.fake_pacifica import FakeIngest

STAGE = '$["data"][*][?(@["key"] = "stage" and @["value"] = "{}")]'


class UploadingHandler(EventHandler):
    """Uploads one derived file as a new transaction pointing back to the event's."""

    def __init__(self, runner: RemoteUploaderRunner, scratch: Path, next_stage: str) -> None:
        self.runner, self.scratch, self.next_stage = runner, scratch, next_stage

    def handle(self, event: CloudEvent) -> None:
        data: Any = event.get_data()
        source = next(e["value"] for e in data if e["destinationTable"] == "Transactions._id")
        folder = self.scratch / f"from-{source}"
        folder.mkdir()
        (folder / "derived.txt").write_text(f"derived from {source}\n")
        self.runner.upload(
            str(folder),
            Transaction(submitter=10, project="1234a", instrument=54),
            [
                TransactionKeyValue(key="Transactions._id", value=str(source)),
                TransactionKeyValue(key="stage", value=self.next_stage),
            ],
        )


@pytest.fixture
def ingest() -> Iterator[FakeIngest]:
    with FakeIngest() as fake:
        yield fake


def metadata_event(template: Any, transaction: int, stage: str) -> Any:
    """The event Metadata would emit for ``transaction`` (tagged with a ``stage``)."""
    document = copy.deepcopy(template)
    document["eventID"] = f"metadata.ingest.{transaction}"
    document["source"] = f"http://metadata.pacifica.org/transactions?_id={transaction}"
    document["data"][3] = {
        "destinationTable": "TransactionKeyValue",
        "key": "stage",
        "value": stage,
    }
    document["data"][-1]["value"] = transaction
    return document


def test_two_hop_chain_is_recorded_and_shown_both_ways(
    sqlite_db: peewee.Database,
    ingest: FakeIngest,
    tmp_path: Path,
    load_json: LoadJson,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runner = RemoteUploaderRunner(ingest.url, temp_dir=str(tmp_path), poll_interval=0.01)
    router = Router()
    router.add_route(STAGE.format("raw"), UploadingHandler(runner, tmp_path, "derived"), name="a")
    router.add_route(STAGE.format("derived"), UploadingHandler(runner, tmp_path, "final"), name="b")
    template = load_json("metadata_ingest_event.json")

    first = dispatch.accept([event_from_dict(metadata_event(template, 100, "raw"))])[0]
    dispatch.process(first.uuid, router)
    [hop_b] = ingest.uploads  # the new transaction (ingest's job id)
    second = dispatch.accept([event_from_dict(metadata_event(template, hop_b, "derived"))])[0]
    dispatch.process(second.uuid, router)
    [hop_c] = set(ingest.uploads) - {hop_b}

    found = chain(hop_c)
    assert [(r.source_transaction, r.transaction) for r in found.ancestors] == [
        (hop_b, hop_c),
        (100, hop_b),
    ]
    assert [r.route for r in found.ancestors] == ["b", "a"]
    assert found.ancestors[1].event == uuid.UUID(first.uuid)
    assert found.ancestors[1].handler == f"{__name__}.UploadingHandler"
    assert "pacifica-dispatcher" in found.ancestors[1].versions
    assert {f["name"]: f["hashsum"] for f in found.ancestors[1].inputs} == {
        "hello.txt": "de0030a19b5fb0c4c6e8f762800994771a4a1409",
        "blob.bin": "6064e60df3525250f1cafad2f63afa71d11acec9",
    }
    assert found.descendants == []
    downward = chain(100)
    assert (downward.ancestors, [r.transaction for r in downward.descendants]) == (
        [],
        [hop_b, hop_c],
    )

    settings = Settings.from_env({"DISPATCHER_DATA_DIR": str(tmp_path)})
    client = WSGIClient(create_app(settings, lambda events: []))
    answer = client.get(f"/lineage/{hop_c}").json()
    assert [r["transaction"] for r in answer["produced_by"]] == [hop_c, hop_b]
    assert client.get("/lineage/abc").status == 400
    assert client.get("/lineage/999").json() == {
        "transaction": 999,
        "produced_by": [],
        "produced": [],
    }

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'test.sqlite3'}")
    assert cli.main(["lineage", str(hop_c)]) == 0
    assert capsys.readouterr().out.startswith(f"100 -> {hop_b} -> {hop_c}\n")
    assert cli.main(["lineage", "100", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["transaction"] for r in shown["produced"]] == [hop_b, hop_c]


def test_an_upload_outside_a_route_records_nothing(sqlite_db: peewee.Database) -> None:
    assert record_upload(5) is False
    assert chain(5).ancestors == []
