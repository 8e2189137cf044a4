"""Load the minimal metadata records the pacifica-policy ingest gate needs.

pacifica-policy's ``/ingest`` accepts a bundle only if its submitter, project and instrument
exist in pacifica-metadata and are cross-linked: the user is a ``member_of`` the project and the
project is linked to the instrument.  Five PUTs create exactly that for submitter ``10``,
project ``'1234a'`` and instrument ``54`` (values from pacifica-metadata 0.13.0
``tests/test_files/*.json``, which pacifica-ingest's own tests use too).

Relationship UUIDs are random per ``dbsync``, so ``member_of`` is looked up, not hard-coded.
``ADMIN_USER_ID`` stays at its default, so the real non-admin membership path is exercised.

Run by ``up.sh`` with the upstream venv's Python; ``METADATA_URL`` comes from ``env.sh``.
Idempotent: exits 0 without changes when user 10 already exists.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import requests

METADATA_URL = os.environ.get("METADATA_URL", "http://127.0.0.1:19121").rstrip("/")
TIMEOUT = 60

SUBMITTER = 10
PROJECT = "1234a"
INSTRUMENT = 54


def put(table: str, objs: list[dict[str, Any]]) -> None:
    """PUT records into a metadata table; exit with the response text on failure."""
    resp = requests.put(
        f"{METADATA_URL}/{table}",
        data=json.dumps(objs),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    if resp.status_code // 100 != 2:
        sys.exit(f"PUT {table} -> {resp.status_code} {resp.text[:500]}")


def relationship_uuid(name: str) -> str:
    """Return the UUID of the metadata relationship called ``name`` (created by dbsync)."""
    resp = requests.get(f"{METADATA_URL}/relationships", params={"name": name}, timeout=TIMEOUT)
    resp.raise_for_status()
    found = resp.json()
    if not found:
        sys.exit(f"metadata has no relationship named {name!r}")
    return str(found[0]["uuid"])


def main() -> int:
    """Load the fixtures unless they are there already."""
    resp = requests.get(f"{METADATA_URL}/users", params={"_id": SUBMITTER}, timeout=TIMEOUT)
    resp.raise_for_status()
    if resp.json():
        print("fixtures already loaded")
        return 0
    member_of = relationship_uuid("member_of")
    put(
        "users",
        [
            {
                "_id": SUBMITTER,
                "email_address": "dmlb2001@example.com",
                "first_name": "David",
                "last_name": "Brown",
                "network_id": "dmlb2001",
            }
        ],
    )
    put(
        "projects",
        [
            {
                "_id": PROJECT,
                "title": "Pacifica Development (active no close)",
                "abstract": "test project",
                "science_theme": "general",
                "accepted_date": "Tue Oct 01 2013",
                "actual_start_date": "Tue Oct 01 2013",
                "submitted_date": "Fri Sep 13 08:15:26 2013",
                "closed_date": None,
                "actual_end_date": None,
            }
        ],
    )
    put(
        "instruments",
        [
            {
                "_id": INSTRUMENT,
                "active": True,
                "display_name": "NMR PROBES: Nittany Liquid Probes",
                "name": "NMR PROBES: Nittany Liquid Probes",
                "name_short": "Nittany Liquid Probes",
            }
        ],
    )
    put("project_user", [{"project": PROJECT, "user": SUBMITTER, "relationship": member_of}])
    put(
        "project_instrument",
        [{"project": PROJECT, "instrument": INSTRUMENT, "relationship": member_of}],
    )
    print(f"fixtures loaded (member_of={member_of})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
