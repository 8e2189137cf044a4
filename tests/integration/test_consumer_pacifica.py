"""The full loop on the real Pacifica stack, through a consumer.zip.

A file uploaded to the real ingest → metadata's real event → the dispatcher producer (on the
notify port) → the consumer's signed delivery → cartd download → the reference's
``__main__.py`` → the helper's upload through the real ingest → a new transaction in Pacifica
with upper-cased bytes and the ``Transactions._id`` provenance key. The consumer's JSONPath is
the reference's without the ``source`` condition real events fail, and skipping derived
transactions (its own uploads) so the loop stops.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher.models import File, Transaction, TransactionKeyValue
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner
from tests.consumer_example import CORRECTED, REAL_JSONPATH
from tests.integration.conftest import Deployment, wait_for
from tests.integration.test_consumer import Consumer, launch, stop_all, wheelhouse  # noqa: F401
from tests.integration.test_pacifica_e2e import (
    SERVICE_TIMEOUT,
    find_event,
    metadata_key_values,
    receiver_address,  # noqa: F401
    serving_on_notify_port,
    transaction_id,
)
from tests.pacifica_stack.plugin import notify_url, pacifica_stack  # noqa: F401
from tests.pacifica_stack.stack import (
    INSTRUMENT,
    PROJECT,
    SUBMITTER,
    PacificaStack,
    cart_fileids,
    download_cart,
)

pytestmark = [pytest.mark.integration, pytest.mark.pacifica_stack, pytest.mark.slow]
ORIGINALS = {
    "notes.txt": b"hello, pacifica!\nmixed Case line 2\n",
    "sub/more.txt": b"second file, lower case\n",
    "raw/blob.bin": b"\x00\xffbinary abc",  # not text/plain: the example leaves it out
}


@pytest.fixture
def producer(
    receiver_address: tuple[str, int],  # noqa: F811
    pacifica_stack: PacificaStack,  # noqa: F811
    deployments: Callable[..., Deployment],
) -> Iterator[Deployment]:
    """A dispatcher producer (the registry's route) where metadata sends its events."""
    with serving_on_notify_port(
        receiver_address, pacifica_stack, deployments, "tests.integration.app"
    ) as deployment:
        yield deployment


def test_a_consumer_zip_processes_a_real_ingest_into_a_new_transaction(
    pacifica_stack: PacificaStack,  # noqa: F811
    producer: Deployment,
    wheelhouse: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    files = {**CORRECTED, "jsonpath2.txt": REAL_JSONPATH}
    transfer = (pacifica_stack.cartd_url, pacifica_stack.ingest_url)
    consumer = launch(files, tmp_path / "consumer", wheelhouse, producer.url, transfer)
    try:
        run_the_loop(pacifica_stack, producer, consumer, tmp_path)
    finally:
        stop_all([consumer])


def run_the_loop(
    stack: PacificaStack, producer: Deployment, consumer: Consumer, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    for relpath, blob in ORIGINALS.items():
        (tree / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tree / relpath).write_bytes(blob)
    uploaded = RemoteUploaderRunner(stack.ingest_url).upload(
        str(tree),
        transaction=Transaction(submitter=SUBMITTER, project=PROJECT, instrument=INSTRUMENT),
        transaction_key_values=[TransactionKeyValue(key="run_tag", value=uuid.uuid4().hex)],
        timeout=SERVICE_TIMEOUT,
    )
    original_id = uploaded.job_id

    ran = consumer.wait_final(f"metadata.ingest.{original_id}", timeout=240)
    assert ran["taskStatus"] == "200 OK", ran
    report = json.loads(ran["routes"][0]["report"])
    assert report["upload"]["by"] == "entry point"

    def derived(described: dict[str, Any]) -> bool:
        data = json.loads(described["data"])
        return any(
            r.get("destinationTable") == "TransactionKeyValue"
            and r.get("key") == "Transactions._id"
            and r.get("value") == original_id
            for r in data
        )

    found = wait_for(
        lambda: find_event(producer, derived),
        SERVICE_TIMEOUT,
        0.2,
        f"the ingest event of the transaction derived from {original_id}",
    )
    data = json.loads(found["data"])
    new_id = transaction_id(data)
    assert new_id == report["upload"]["job_id"]
    copied = Transaction.from_event(data)
    assert (copied.submitter, copied.project, copied.instrument) == (SUBMITTER, PROJECT, INSTRUMENT)
    assert metadata_key_values(stack, new_id) == {"Transactions._id": str(original_id)}
    records = [r for r in data if r.get("destinationTable") == "Files"]
    assert sorted(f.path for f in File.from_event(data)) == ["notes.txt", "sub/more.txt"]
    fetched = download_cart(stack, cart_fileids(records), timeout=SERVICE_TIMEOUT)
    assert fetched == {p: b.upper() for p, b in ORIGINALS.items() if p.endswith(".txt")}
    # The derived transaction's own event reached the producer but not the consumer.
    assert all(d["eventID"] != f"metadata.ingest.{new_id}" for d in consumer.recent())
