"""Lineage over a two-hop chain on the real Pacifica stack (issue 16).

An upload into the real ingest; metadata's event runs route ``first`` (an upload, B); B's event
runs route ``second`` (an upload, C); ``pacifica-dispatcher lineage C`` shows all three.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pacifica.dispatcher.models import Transaction
from pacifica.dispatcher.uploader_runners import RemoteUploaderRunner
from tests.integration.conftest import Deployment, wait_for
from tests.integration.test_pacifica_e2e import (
    SERVICE_TIMEOUT,
    find_event,
    receiver_address,  # noqa: F401 (fixture)
    serving_on_notify_port,
    transaction_id,
    wait_final,
)
from tests.pacifica_stack.plugin import pacifica_stack  # noqa: F401
from tests.pacifica_stack.stack import INSTRUMENT, PROJECT, SUBMITTER, PacificaStack

pytestmark = [pytest.mark.integration, pytest.mark.pacifica_stack, pytest.mark.slow]


@pytest.fixture
def dispatcher(
    receiver_address: tuple[str, int],  # noqa: F811
    pacifica_stack: PacificaStack,  # noqa: F811
    deployments: Callable[..., Deployment],
) -> Iterator[Deployment]:
    """The lineage_app dispatcher on the notify port."""
    with serving_on_notify_port(
        receiver_address, pacifica_stack, deployments, "tests.integration.lineage_app"
    ) as deployment:
        yield deployment


def hop_of(described: dict[str, Any]) -> str | None:
    data = json.loads(described["data"])
    return next(
        (
            r.get("value")
            for r in data
            if r.get("destinationTable") == "TransactionKeyValue" and r.get("key") == "hop"
        ),
        None,
    )


def test_lineage_of_the_last_of_two_hops_shows_all_three_transactions(
    pacifica_stack: PacificaStack,  # noqa: F811
    dispatcher: Deployment,
    tmp_path: Path,
) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "raw.txt").write_bytes(b"raw data\n")
    original = RemoteUploaderRunner(pacifica_stack.ingest_url).upload(
        str(tmp_path / "tree"),
        transaction=Transaction(submitter=SUBMITTER, project=PROJECT, instrument=INSTRUMENT),
        timeout=SERVICE_TIMEOUT,
    )
    assert original.job_id is not None
    last = wait_for(
        lambda: find_event(dispatcher, lambda e: hop_of(e) == "2"),
        SERVICE_TIMEOUT * 2,
        0.5,
        "the second hop's ingest event",
    )
    last = wait_final(dispatcher, last["taskID"], SERVICE_TIMEOUT)
    assert last["taskStatus"] == "422 Unprocessable Entity", last  # the chain stops there
    hop_c = transaction_id(json.loads(last["data"]))
    shown = dispatcher.cli("lineage", str(hop_c), "--json")
    assert shown.returncode == 0, shown.stderr
    chain = json.loads(shown.stdout)
    produced_by = [
        (r["source_transaction"], r["transaction"], r["route"]) for r in chain["produced_by"]
    ]
    hop_b = produced_by[0][0]
    assert produced_by == [(hop_b, hop_c, "second"), (original.job_id, hop_b, "first")]
    assert [f["name"] for f in chain["produced_by"][1]["inputs"]] == ["raw.txt"]
    text = dispatcher.cli("lineage", str(original.job_id))
    assert text.returncode == 0, text.stderr
    assert f"produced {hop_b} from {original.job_id}: route first" in text.stdout
    assert f"produced {hop_c} from {hop_b}: route second" in text.stdout
