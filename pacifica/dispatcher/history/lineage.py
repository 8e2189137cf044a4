"""Lineage: record what each upload was made from, and follow the chain both ways.

A handler's upload through ``RemoteUploaderRunner`` (the new transaction's id
is ingest's job id) is recorded with the route running it (``router.current_run``):
the source event and its transaction (the event's ``Transactions._id``), the
route, the handler, package versions and the event's input files with their
hashes. ``chain`` walks the records from a transaction up (what produced it,
hop by hop) and down (what was produced from it, breadth first).
"""

from __future__ import annotations

import importlib.metadata
import logging
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from pacifica.dispatcher import __version__
from pacifica.dispatcher.errors import InvalidRequestError, NotFoundError
from pacifica.dispatcher.router import RunningRoute, current_run
from pacifica.dispatcher.storage import iso, utcnow
from pacifica.dispatcher.storage.lineage import LineageRow, insert_lineage, made_as, made_from

log = logging.getLogger(__name__)
MAX_HOPS = 100  # a cycle in recorded lineage (not expected) cannot loop forever
INPUT_KEYS = ("_id", "name", "subdir", "size", "hashtype", "hashsum", "mimetype")


@dataclass(frozen=True)
class Chain:
    """A transaction's lineage: what produced it (nearest first) and what was made from it."""

    transaction: int
    ancestors: list[LineageRow]
    descendants: list[LineageRow]


def source_transaction(document: Any) -> int | None:
    """The transaction an event is about: its ``Transactions._id`` data entry, if any."""
    data = document.get("data") if isinstance(document, dict) else None
    for entry in data if isinstance(data, list) else []:
        if isinstance(entry, dict) and entry.get("destinationTable") == "Transactions._id":
            try:
                return int(entry["value"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def input_files(document: Any) -> list[dict[str, Any]]:
    """The event's files (``destinationTable`` ``Files``) with their hashes."""
    data = document.get("data") if isinstance(document, dict) else None
    return [
        {key: entry[key] for key in INPUT_KEYS if key in entry}
        for entry in (data if isinstance(data, list) else [])
        if isinstance(entry, dict) and entry.get("destinationTable") == "Files"
    ]


def versions_for(handler: object) -> dict[str, str]:
    """pacifica-dispatcher's version and the version of the package the handler comes from."""
    found = {"pacifica-dispatcher": __version__}
    top = type(handler).__module__.split(".")[0]
    for name in importlib.metadata.packages_distributions().get(top, []):
        if name != "pacifica-dispatcher":
            try:
                found[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def record_upload(transaction: int | None, running: RunningRoute | None = None) -> bool:
    """Record an upload made while a route runs; True when recorded.

    Never raises: lineage is worth recording, never worth failing an upload for.
    """
    running = running or current_run.get()
    if transaction is None or running is None:
        return False
    handler = type(running.handler)
    try:
        insert_lineage(
            LineageRow(
                transaction=int(transaction),
                source_transaction=source_transaction(running.event.document),
                event=uuidlib.UUID(running.task_id) if running.task_id else None,
                route=running.route,
                handler=f"{handler.__module__}.{handler.__qualname__}",
                versions=versions_for(running.handler),
                inputs=input_files(running.event.document),
                created=utcnow(),
            )
        )
    except Exception:  # no database here (a handler run outside the service), or it is down
        log.warning("lineage of transaction %s not recorded", transaction, exc_info=True)
        return False
    return True


def chain(transaction: int) -> Chain:
    """The lineage of ``transaction`` both ways, across every recorded hop."""
    ancestors: list[LineageRow] = []
    current: int | None = transaction
    while current is not None and len(ancestors) < MAX_HOPS:
        made = made_as(current)
        if not made:
            break
        ancestors.append(made[0])
        current = made[0].source_transaction
    descendants: list[LineageRow] = []
    seen, frontier = {transaction}, [transaction]
    while frontier and len(descendants) < MAX_HOPS * 10:
        found = [r for r in made_from(frontier) if r.transaction not in seen]
        descendants.extend(found)
        seen.update(r.transaction for r in found)
        frontier = [r.transaction for r in found]
    return Chain(transaction, ancestors, descendants)


def row_json(row: LineageRow) -> dict[str, Any]:
    """One lineage record as JSON."""
    return {
        "transaction": row.transaction,
        "source_transaction": row.source_transaction,
        "event": str(row.event) if row.event else None,
        "route": row.route,
        "handler": row.handler,
        "versions": row.versions,
        "inputs": row.inputs,
        "created": iso(row.created),
    }


def to_json(found: Chain) -> dict[str, Any]:
    """``GET /lineage/<id>`` and ``lineage --json``."""
    return {
        "transaction": found.transaction,
        "produced_by": [row_json(r) for r in found.ancestors],
        "produced": [row_json(r) for r in found.descendants],
    }


def to_text(found: Chain) -> str:
    """The chain as lines: oldest transaction first, then what came from this one."""
    lines = []
    path = [r.source_transaction for r in reversed(found.ancestors)]
    hops = [str(t) if t is not None else "?" for t in path] + [str(found.transaction)]
    lines.append(
        " -> ".join(hops) if found.ancestors else f"{found.transaction} (no recorded source)"
    )
    for row in reversed(found.ancestors):
        lines.append(
            f"  {row.source_transaction} -> {row.transaction}: route {row.route}, {row.handler}, "
            f"event {row.event}, {len(row.inputs)} input file(s), {row.versions}"
        )
    for row in found.descendants:
        lines.append(
            f"  produced {row.transaction} from {row.source_transaction}: route {row.route}, "
            f"{row.handler}"
        )
    return "\n".join(lines)


def parse_transaction(text: str | None) -> int:
    """A transaction id from a path or the command line.

    Raises:
        NotFoundError: it is absent.
        InvalidRequestError: it is not a non-negative integer.
    """
    if not text:
        raise NotFoundError("a transaction id is required: /lineage/<transaction id>")
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InvalidRequestError(f"transaction id {text[:40]!r} is not a number")
    return int(text)
