"""A dry run: one JSONPath over many stored events, which match and, for the others, why not.

Matching uses the router's own predicate (``path_matches``); only the events
that did not match are walked again by ``explain``. Reasons are grouped by
the clause or path step that failed, so ten thousand non-matches read as a
few lines.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jsonpath2.path import Path

from pacifica.dispatcher.history.explain import Explanation, explain
from pacifica.dispatcher.router import path_matches
from pacifica.dispatcher.storage import iso
from pacifica.dispatcher.storage.history import EventDocument, event_documents

DEFAULT_LAST = 1000
RECENT_CHECK = 1000  # events a subscription's create/update answer is checked against


@dataclass(frozen=True)
class Verdict:
    """One stored event against the JSONPath."""

    event: EventDocument
    explanation: Explanation


@dataclass(frozen=True)
class DryRun:
    """What a JSONPath does to the selected events: counts, grouped reasons, some examples."""

    jsonpath: str
    examined: int
    matched: int
    reasons: list[tuple[str, int]]  # the failed clause or step, and how many events failed there
    verdicts: list[Verdict]  # up to ``show`` events, matches first
    seconds: float


@dataclass(frozen=True)
class Selection:
    """Which stored events to look at: by id, or the ``last`` N created in [since, until)."""

    last: int | None = DEFAULT_LAST
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[uuidlib.UUID, ...] = ()


def safe_matches(path: Path, document: Any) -> bool:
    """``path_matches``, with an error (a function applied to the wrong type) as no match."""
    try:
        return path_matches(path, document)
    except Exception:  # jsonpath2 functions raise on unexpected types
        return False


def dry_run(text: str, path: Path, selection: Selection, show: int = 20) -> DryRun:
    """Test ``path`` (compiled from ``text``) on the selected stored events."""
    started = time.perf_counter()
    found = event_documents(selection.last, selection.since, selection.until, selection.ids)
    return judge_documents(text, path, found, show, started)


def judge_documents(
    text: str, path: Path, found: Iterable[EventDocument], show: int, started: float
) -> DryRun:
    """The dry run's answer over events as they are read (``started``: a ``perf_counter``
    reading); only the ``show`` events of each kind are kept."""
    matched: list[Verdict] = []
    failed: list[Verdict] = []
    reasons: Counter[str] = Counter()
    examined = matches = 0
    for event in found:
        examined += 1
        # One walk decides the match and the reason; values are quoted only for shown events.
        explanation = explain(path, event.document, detail=len(failed) < show)
        if explanation.matched:
            matches += 1
            if len(matched) < show:
                matched.append(Verdict(event, explanation))
            continue
        reasons[explanation.failed] += 1
        if len(failed) < show:
            failed.append(Verdict(event, explanation))
    shown = (matched + failed)[:show]
    elapsed = time.perf_counter() - started
    return DryRun(text, examined, matches, reasons.most_common(), shown, elapsed)


def to_json(run: DryRun) -> dict[str, Any]:
    """The JSON answer of a dry run (CLI ``--json`` and HTTP)."""
    return {
        "jsonpath": run.jsonpath,
        "examined": run.examined,
        "matched": run.matched,
        "not_matched": run.examined - run.matched,
        "reasons": [{"failed": failed, "events": count} for failed, count in run.reasons],
        "events": [
            {
                "uuid": str(v.event.uuid),
                "created": iso(v.event.created),
                "source": v.event.source,
                "id": v.event.event_id,
                "type": v.event.event_type,
                "matched": v.explanation.matched,
                "reason": v.explanation.reason or None,
            }
            for v in run.verdicts
        ],
        "seconds": round(run.seconds, 3),
    }


def to_text(run: DryRun) -> str:
    """A dry run for a terminal: the counts, each reason with its count, then the examples."""
    lines = [f"{run.matched} of {run.examined} event(s) match {run.jsonpath}"]
    for failed, count in run.reasons:
        lines.append(f"  {count} did not match at: {failed}")
    for verdict in run.verdicts:
        event = verdict.event
        head = f"{event.uuid} {iso(event.created)} {event.source} {event.event_id}"
        outcome = "MATCH" if verdict.explanation.matched else verdict.explanation.reason
        lines.append(f"{head}\n    {outcome}")
    lines.append(f"({run.seconds:.3f} s)")
    return "\n".join(lines)


def recent_note(path: Path) -> str | None:
    """A warning for a subscription's answer when its JSONPath matches none of the recent events."""
    found = list(event_documents(RECENT_CHECK))
    if not found or any(safe_matches(path, e.document) for e in found):
        return None
    reason = explain(path, found[0].document).reason
    return (
        f"this JSONPath matches none of the last {len(found)} stored event(s); "
        f"on the most recent one: {reason}"
    )
