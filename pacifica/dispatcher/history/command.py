"""The history tools' command line: ``jsonpath test`` (and, with them, replay and lineage)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid as uuidlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

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


def add_replay_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``events replay --subscription UUID --since DATE [...]``."""
    replay = actions.add_parser(
        "replay",
        help="send stored events again to one subscription (marked as replays, throttled), "
        "or run one route again on them",
        description="Send the stored events created in [--since, --until) that the JSONPath "
        "(the subscription's own unless --jsonpath) matches to one subscription again. Each "
        "delivery carries a 'webhook-replay: <replay id>' header. Deliveries (or, with "
        "--route, the route's runs) are scheduled --rate per second in the database: if this "
        "command stops, the workers send the rest at the same rate.",
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--subscription", type=uuidlib.UUID, help="a subscription's uuid")
    which.add_argument(
        "--route", help="a route's name: run its handler again on the events (failed runs)"
    )
    replay.add_argument("--all", action="store_true", help="with --route: every run, not failed")
    replay.add_argument("--since", type=_when, required=True, help="created at or after")
    replay.add_argument("--until", type=_when, help="created before (ISO date/time)")
    replay.add_argument("--jsonpath", help="select with this JSONPath instead")
    replay.add_argument("--rate", type=float, default=10.0, help="deliveries per second [10]")
    replay.add_argument("--dry-run", action="store_true", help="only say how many would go")
    replay.add_argument(
        "--no-wait", action="store_true", help="return once stored (the workers send them)"
    )


def run_route_replay(args: argparse.Namespace, events: Any, deliveries: Any) -> int:
    """Run ``events replay --route``: say how many runs would repeat, then mark them and
    publish their events as they fall due (``--rate`` per second), with progress on stderr;
    only the marked routes run (others keep their outcome).

    Raises:
        InvalidRequestError: a bad rate.
    """
    from pacifica.dispatcher.history import replay
    from pacifica.dispatcher.history.dryrun import Selection

    rate = replay.check_rate(args.rate, 10_000)
    selection = Selection(last=None, since=args.since, until=args.until)
    only_failed = not args.all
    chosen = replay.plan_route(args.route, selection, args.jsonpath, only_failed)
    kind = "failed run(s)" if only_failed else "run(s)"
    print(f"{len(chosen.events)} {kind} of route {args.route!r} would run again at {rate:g}/s")
    if args.dry_run or not chosen.events:
        return 0
    key, _ = replay.start_route(args.route, selection, chosen, "cli", rate, only_failed)
    return _follow(args, key, replay.Publishers(events, deliveries))


def _follow(args: argparse.Namespace, key: int, through: Any) -> int:
    """Say the replay is stored; unless ``--no-wait``, publish it until done (exit 1 if any
    of it failed)."""
    from pacifica.dispatcher.history import replay

    print(f"replay {key} stored", flush=True)
    if args.no_wait:
        return 0
    final = replay.pump(key, through, _replay_printer())
    print(replay.describe(final))
    return 0 if final.failed == 0 else 1


def run_replay(args: argparse.Namespace, events: Any, deliveries: Any) -> int:
    """Run ``events replay``: print how many would go, then (unless ``--dry-run``) store the
    replay and publish its deliveries as they fall due, with progress on stderr.

    Raises:
        NotFoundError: no such subscription.
        InvalidRequestError: a bad rate.
    """
    from pacifica.dispatcher.errors import NotFoundError
    from pacifica.dispatcher.history import replay
    from pacifica.dispatcher.history.dryrun import Selection
    from pacifica.dispatcher.storage.replays import subscription_by_id

    subscription = subscription_by_id(args.subscription)
    if subscription is None:
        raise NotFoundError(f"no subscription {args.subscription}")
    rate = replay.check_rate(args.rate, 10_000)
    selection = Selection(last=None, since=args.since, until=args.until)
    chosen = replay.plan(subscription, selection, args.jsonpath)
    seconds = len(chosen.events) / rate
    print(
        f"{len(chosen.events)} event(s) would be sent to subscription {subscription.uuid} "
        f"({subscription.name}) at {rate:g}/s (about {seconds:.0f} s)"
    )
    if args.dry_run or not chosen.events:
        return 0
    key = replay.start(subscription, selection, chosen, "cli", rate)
    return _follow(args, key, replay.Publishers(events, deliveries))


def _replay_printer() -> Callable[[Any], None]:
    """Progress on stderr: one rewritten line on a terminal, a line a second otherwise."""
    from pacifica.dispatcher.history.replay import describe

    last = [0.0]

    def show(progress: Any) -> None:
        now = time.monotonic()
        if sys.stderr.isatty():
            print(f"\r{describe(progress)}", end="", file=sys.stderr, flush=True)
        elif now - last[0] >= 1.0 or progress.done:
            last[0] = now
            print(describe(progress), file=sys.stderr, flush=True)

    return show


def add_lineage_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``lineage TRANSACTION_ID [--json]``."""
    lineage = commands.add_parser(
        "lineage",
        help="what produced a transaction and what was produced from it (handlers' uploads)",
    )
    lineage.add_argument("transaction", help="a Pacifica transaction id")
    lineage.add_argument("--json", action="store_true", help="answer as JSON (as the HTTP API)")


def run_lineage(args: argparse.Namespace) -> int:
    """Run ``lineage``: exit 0 when anything is recorded for the transaction, 1 otherwise.

    Raises:
        InvalidRequestError: the id is not a number.
    """
    from pacifica.dispatcher.history import lineage

    found = lineage.chain(lineage.parse_transaction(args.transaction))
    if args.json:
        print(json.dumps(lineage.to_json(found), ensure_ascii=False, indent=2))
    else:
        print(lineage.to_text(found))
    return 0 if found.ancestors or found.descendants else 1
