"""Pacifica models from the SOP example event and a real ingest event."""

from __future__ import annotations

import pytest

from pacifica.dispatcher import (
    File,
    FileKeyValue,
    Transaction,
    TransactionDuplicateAttributeError,
    TransactionKeyValue,
)
from pacifica.dispatcher.testing import event_from_dict
from tests.conftest import LoadJson


def test_real_ingest_event_gives_transaction_files_and_key_values(load_json: LoadJson) -> None:
    event = event_from_dict(load_json("metadata_ingest_event.json")).event
    assert Transaction.from_event(event) == Transaction(
        _id=1, submitter=10, project="1234a", instrument=54
    )
    files = File.from_event(event)
    assert [(f._id, f.path, f.size) for f in files] == [
        (1, "hello.txt", 15),
        (2, "sub/blob.bin", 70000),
    ]
    assert TransactionKeyValue.from_event(event) == [
        TransactionKeyValue(key="run_tag", value="e2e-1795422066")
    ]


def test_sop_example_event_models(load_json: LoadJson) -> None:
    document = load_json("sop_example_event.json")
    transaction = Transaction.from_cloudevents_model(event_from_dict(document).event)
    assert transaction._id == -1
    [lipsum] = File.from_cloudevents_model(document)
    assert lipsum.path == "lipsum.txt"
    assert lipsum.hashtype == "sha1"


def test_file_path_joins_subdir_and_name() -> None:
    assert File(name="n", subdir="a/b/").path == "a/b/n"
    assert File(name="n", subdir="").path == "n"
    assert File(name="n").path == "n"
    with pytest.raises(AttributeError, match="field 'name' is None"):
        _ = File().path


def test_duplicate_transaction_field_is_an_error() -> None:
    data = [
        {"destinationTable": "Transactions._id", "value": 1},
        {"destinationTable": "Transactions._id", "value": 2},
    ]
    with pytest.raises(TransactionDuplicateAttributeError, match=r"'Transactions._id' is already"):
        Transaction.from_event(data)


def test_file_key_values_are_read() -> None:
    data = [{"destinationTable": "FileKeyValue", "key": "k", "value": "v", "file_id": 3}]
    assert FileKeyValue.from_event(data) == [FileKeyValue(key="k", value="v", file_id=3)]


def test_non_list_data_gives_no_records(load_json: LoadJson) -> None:
    orm = event_from_dict(load_json("metadata_orm_event.json")).event
    assert File.from_event(orm) == []
    assert Transaction.from_event(orm) == Transaction()


def test_unknown_keys_are_ignored() -> None:
    [item] = File.from_event([{"destinationTable": "Files", "name": "x", "weird": 1}])
    assert item == File(name="x")


def test_transaction_to_records_lists_set_fields() -> None:
    records = Transaction(submitter=10, project="p").to_records()
    assert records == [
        {"destinationTable": "Transactions.submitter", "value": 10},
        {"destinationTable": "Transactions.project", "value": "p"},
    ]
