"""Sample events shipped with the package, and what a consumer's JSONPath makes of them.

``metadata_ingest.json`` is verbatim what real pacifica-metadata 0.13.0
POSTs after an ingest (source ``http://metadata.pacifica.org/transactions?_id=N``);
``reference_ingest.json`` has the shapes the Consumer Expectations document
assumes (source ``/pacifica/metadata/ingest``, ``Transactions.proposal``,
``text/plain`` files). A JSONPath that only matches the second would never
fire on a real Pacifica; the check says so before the consumer is deployed.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from jsonpath2.path import Path

from pacifica.dispatcher.router import path_matches

REAL = "metadata_ingest.json"
REFERENCE = "reference_ingest.json"
SAMPLES = {
    REAL: "the event real Pacifica Metadata emits after an ingest",
    REFERENCE: "the Consumer Expectations document's event shape",
}
REFERENCE_SOURCE = "/pacifica/metadata/ingest"
REAL_SOURCE = "http://metadata.pacifica.org/transactions?_id=N"


def load_sample(name: str) -> Any:
    """A shipped sample event, as its JSON document."""
    text = resources.files(__package__).joinpath("sample_events").joinpath(name).read_text("utf-8")
    return json.loads(text)


def sample_findings(text: str, path: Path) -> list[tuple[str, str]]:
    """(severity name, message) for each sample the JSONPath does or does not match."""
    findings = []
    matched = {}
    for name, what in SAMPLES.items():
        matched[name] = path_matches(path, load_sample(name))
        verb = "matches" if matched[name] else "does not match"
        findings.append(("INFO", f"{verb} sample {name} ({what})"))
    if not matched[REAL]:
        reason = "the JSONPath does not match the event real Pacifica Metadata emits"
        if REFERENCE_SOURCE in text:
            reason += (
                f": it requires source = {REFERENCE_SOURCE!r}, which real Metadata events "
                f"never carry (their source is {REAL_SOURCE!r})"
            )
        findings.append(("WARNING", reason + "; this consumer would never run on a real Pacifica"))
    return findings
