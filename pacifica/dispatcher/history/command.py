"""The history tools' command line: ``jsonpath test`` (and, with them, replay and lineage)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid as uuidlib
from datetime import datetime

from pacifica.dispatcher.errors import InvalidRequestError

DEFAULT_LAST = 1000  # dryrun.DEFAULT_LAST (not imported: `--help` stays light)


def add_jsonpath_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``jsonpath test JSONPATH [--last N | --since DATE | --event ID]``."""
    jsonpath = commands.add_parser("jsonpath", help="test a JSONPath against stored events")
    actions = jsonpath.add_subparsers(dest="jsonpath_command", metavar="ACTION", required=True)
    test = actions.add_parser(
        "test",
        help="which stored events a JSONPath matches, and why the others do not",
        description="Dry-run a JSONPath over stored events: for each event that does not "
        "match, the first clause that was false (with the event's value) or the path step "
        "that found nothing.",
    )
    test.add_argument("jsonpath", help="the JSONPath, or @FILE to read it from a file")
    chosen = test.add_mutually_exclusive_group()
    chosen.add_argument("--last", type=int, help=f"the last N stored events [{DEFAULT_LAST}]")
    chosen.add_argument("--since", type=_when, help="events created at or after (ISO date/time)")
    chosen.add_argument("--event", type=uuidlib.UUID, help="one stored event (its task id)")
    test.add_argument("--until", type=_when, help="events created before (ISO date/time)")
    test.add_argument("--show", type=int, default=20, help="events to list [20]")
    test.add_argument("--json", action="store_true", help="answer as JSON (as the HTTP API)")


def _when(text: str) -> datetime:
    from pacifica.dispatcher.history.api import parse_when

    try:
        return parse_when("date", text)
    except InvalidRequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_jsonpath(args: argparse.Namespace) -> int:
    """Run ``jsonpath test``; exit 0 when at least one event matched, 1 when none did.

    Raises:
        InvalidSubscriptionError: the JSONPath does not parse.
    """
    from pacifica.dispatcher.history import dryrun
    from pacifica.dispatcher.subscriptions import registry

    text = args.jsonpath
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as handle:
            text = handle.read().strip()
    path = registry.compile_jsonpath(text)
    if args.event is not None:
        selection = dryrun.Selection(last=None, ids=(args.event,))
    else:
        last = args.last if args.last is not None or args.since else dryrun.DEFAULT_LAST
        selection = dryrun.Selection(last, args.since, args.until)
    run = dryrun.dry_run(text, path, selection, max(args.show, 0))
    if args.json:
        print(json.dumps(dryrun.to_json(run), ensure_ascii=False, indent=2))
    else:
        print(dryrun.to_text(run))
    if not run.examined:
        print("no stored events were selected", file=sys.stderr)
    return 0 if run.matched else 1
