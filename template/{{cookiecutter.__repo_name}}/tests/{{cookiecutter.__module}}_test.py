"""Unit tests of {{ cookiecutter.__repo_name }}.

Run them with ``cd tests && python3 -m unittest {{ cookiecutter.__module }}_test.py``.
Every ``test_files/<eventID>/`` directory is a test case: ``event.json`` is the
CloudEvent and ``data/`` holds the files it describes (at ``<subdir>/<name>``).
"""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path
from typing import Any

from pacifica.dispatcher import File, Transaction
from pacifica.dispatcher.bundles import read_bundle
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import LocalDownloaderRunner
from pacifica.dispatcher.events import ReceivedEvent
from pacifica.dispatcher.router import compile_path
from pacifica.dispatcher.testing import load_event, run_router
from pacifica.dispatcher.uploader_runners import LocalUploaderRunner

from {{ cookiecutter.__import_path }}.event_handlers import (
    PROVENANCE_KEY,
    {{ cookiecutter.__handler_class }},
)
from {{ cookiecutter.__import_path }}.router import (
    JSONPATH_FILE,
    LOCAL_DATA_ENV,
    OUTPUT_DIR_ENV,
    ROUTE_NAME,
    create_router,
)

TEST_FILES = Path(__file__).resolve().parent / "test_files"
EVENT_DIRS = sorted(path.parent for path in TEST_FILES.glob("*/event.json"))


def key_values(metadata: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``TransactionKeyValue`` records of bundle metadata, as a dict."""
    return {
        record["key"]: record["value"]
        for record in metadata
        if record["destinationTable"] == "TransactionKeyValue"
    }


class {{ cookiecutter.__test_class }}(unittest.TestCase):
    """The handler, the JSONPath and the router, on every event in test_files."""

    def test_there_are_test_events(self) -> None:
        self.assertTrue(EVENT_DIRS, f"no test_files/<eventID>/event.json under {TEST_FILES}")

    def test_handler_uploads_upper_cased_copies_linked_to_the_input(self) -> None:
        for event_dir in EVENT_DIRS:
            with self.subTest(event=event_dir.name), tempfile.TemporaryDirectory() as output:
                received = load_event(event_dir)
                data_dir = event_dir / "data"
                handler = {{ cookiecutter.__handler_class }}(
                    LocalDownloaderRunner(str(data_dir)),
                    LocalUploaderRunner(output),
                )

                handler.handle(received.event)

                bundles = list(Path(output).glob("*.tar"))
                self.assertEqual(len(bundles), 1)
                contents = read_bundle(bundles[0])
                expected = {
                    file.path: (data_dir / file.path).read_bytes().upper()
                    for file in File.from_event(received.event)
                }
                self.assertEqual(contents.files, expected)
                transaction = Transaction.from_event(received.event)
                self.assertEqual(
                    key_values(contents.metadata),
                    {PROVENANCE_KEY: transaction._id},
                )

    def test_jsonpath_matches_each_test_event_once_at_the_root(self) -> None:
        path = compile_path(JSONPATH_FILE)
        for event_dir in EVENT_DIRS:
            with self.subTest(event=event_dir.name):
                document = load_event(event_dir).document
                matches = [match.node.tojsonpath() for match in path.match(document)]
                self.assertEqual(matches, ["$"])

    def test_jsonpath_skips_transactions_derived_by_a_dispatcher(self) -> None:
        # This dispatcher's own uploads carry Transactions._id: matching them would loop.
        path = compile_path(JSONPATH_FILE)
        for event_dir in EVENT_DIRS:
            with self.subTest(event=event_dir.name):
                document = derived(load_event(event_dir))
                self.assertEqual(list(path.match(document)), [])

    def test_router_runs_the_handler_for_each_test_event(self) -> None:
        for event_dir in EVENT_DIRS:
            with self.subTest(event=event_dir.name), tempfile.TemporaryDirectory() as output:
                environ = {LOCAL_DATA_ENV: str(event_dir / "data"), OUTPUT_DIR_ENV: output}
                router = create_router(Settings.from_env({}), environ)

                report = run_router(router, load_event(event_dir))

                self.assertEqual(report.route_names, [ROUTE_NAME])
                self.assertEqual(report.failed, [])
                self.assertEqual(len(list(Path(output).glob("*.tar"))), 1)


def derived(received: ReceivedEvent) -> dict[str, Any]:
    """The event document with the provenance key-value this dispatcher's uploads carry."""
    document = json.loads(json.dumps(received.document))
    document["data"].append(
        {"destinationTable": "TransactionKeyValue", "key": PROVENANCE_KEY, "value": 1}
    )
    return document


if __name__ == "__main__":
    unittest.main()
