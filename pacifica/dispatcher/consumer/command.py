"""``start-pacifica-notifications-consumer``: deploy a consumer.zip with one command.

``--check`` validates the archive without running anything or contacting a
producer; ``--show TASK_ID`` prints one run of a running consumer; otherwise
the consumer starts (``runner.run``) and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from pacifica.dispatcher.consumer.archive import check_archive
from pacifica.dispatcher.consumer.producer import Producer
from pacifica.dispatcher.consumer.runner import ConsumerOptions, progress, run
from pacifica.dispatcher.errors import DispatcherError

PROG = "start-pacifica-notifications-consumer"
PASSWORD_VARIABLE = "PACIFICA_PRODUCER_PASSWORD"  # noqa: S105 (a variable's name)
EPILOG = f"""\
The producer's password, for --producer-username, is read from ${PASSWORD_VARIABLE}.
Data movement and storage are configured as for pacifica-dispatcher (environment):
  CARTD_URL, INGEST_URL           where inputs are downloaded from and outputs uploaded to
  AUTHENTICATION_TYPE, ..._USERNAME, ..._PASSWORD, ..._HEADER, ..._CERT, ..._KEY, TLS_VERIFY
                                  credentials for cartd and ingest
  TRANSFER_TIMEOUT, REQUEST_TIMEOUT
  DATABASE_URL, BROKER_URL        default: an embedded SQLite database and broker in the
                                  consumer's temporary directory (removed when it stops)
`pacifica-dispatcher --help` lists every variable.

Entry points get SRC and DST: SRC/notification.json (the event), SRC/downloads/ (its files),
DST/uploads/ (empty). Exit 0: DST/uploads/ becomes a new transaction with the original's
submitter, project and instrument and Transactions._id pointing back (unless the entry point
uploaded itself with pacifica_notifications_consumer.upload).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Deploy a consumer.zip (init.sh, requirements.txt, jsonpath2.txt, "
        "__main__.py): check and extract it, build its virtual environment, start a worker "
        "and a receiver, and subscribe the receiver to a producer. SIGINT/SIGTERM undoes it all.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "archive", metavar="consumer.zip", type=Path, nargs="?", help="the consumer"
    )
    parser.add_argument(
        "--check", action="store_true", help="only validate the archive (exit 0 when valid)"
    )
    parser.add_argument(
        "--show", metavar="TASK_ID", help="print one event's run from a running consumer and exit"
    )
    producer = parser.add_argument_group("producer")
    producer.add_argument(
        "--producer", metavar="URL", help="the producer's base URL (its /eventmatch)"
    )
    producer.add_argument("--user", help="the subscription's owner, sent in the user header")
    producer.add_argument(
        "--user-header", default="Http-Remote-User", help="the user header [Http-Remote-User]"
    )
    producer.add_argument(
        "--producer-username",
        help=f"basic auth user at the producer (password: ${PASSWORD_VARIABLE})",
    )
    producer.add_argument(
        "--producer-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra header for the producer (repeatable), e.g. an API token",
    )
    producer.add_argument(
        "--producer-ca", help="CA bundle to verify the producer's TLS certificate with"
    )
    receiver = parser.add_argument_group("receiver")
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    receiver.add_argument("--port", type=int, default=8071, help="port to listen on [8071]")
    receiver.add_argument(
        "--public-url",
        help="the URL the producer reaches the receiver at [http://HOST:PORT]; /receive is added",
    )
    runs = parser.add_argument_group("entry points")
    runs.add_argument("--concurrency", type=int, default=1, help="entry points running at once [1]")
    runs.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds an entry point may run [3600]"
    )
    runs.add_argument(
        "--init-timeout", type=float, default=600.0, help="seconds init.sh may run [600]"
    )
    runs.add_argument(
        "--grace",
        type=float,
        default=60.0,
        help="on stop, seconds running entry points get to finish before they are killed [60]",
    )
    runs.add_argument(
        "--workdir", help="where the temporary directory is created [the system's temp dir]"
    )
    runs.add_argument("--cartd-url", help="overrides CARTD_URL")
    runs.add_argument("--ingest-url", help="overrides INGEST_URL")
    return parser


def producer_from(args: argparse.Namespace) -> Producer:
    """The producer client the arguments describe."""
    headers = {}
    for header in args.producer_header:
        name, _, value = header.partition(":")
        headers[name.strip()] = value.strip()
    auth = None
    if args.producer_username:
        auth = (args.producer_username, os.environ.get(PASSWORD_VARIABLE, ""))
    return Producer(
        args.producer,
        args.user,
        user_header=args.user_header,
        auth=auth,
        headers=headers,
        verify_tls=args.producer_ca or True,
    )


def show(base_url: str, task_id: str) -> int:
    """Print a consumer run (status, exit status, duration, output) from ``GET /get/<id>``."""
    response = requests.get(f"{base_url.rstrip('/')}/get/{task_id}", timeout=30)
    if not response.ok:
        print(f"{PROG}: {response.status_code} {response.text}", file=sys.stderr)
        return 1
    described = response.json()
    print(f"event {task_id}: {described['taskStatus']}")
    for route in described.get("routes", []):
        print(f"run {route['route']}: {route['status']} ({route['started']} → {route['finished']})")
        if route.get("report"):
            report: dict[str, Any] = json.loads(route["report"])
            print(json.dumps(report, ensure_ascii=False, indent=2))
        if route.get("exceptionValue"):
            print(route["exceptionValue"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; exit 0 after a clean stop or a valid check."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.show:
        return show(args.public_url or f"http://{args.host}:{args.port}", args.show)
    if args.archive is None:
        parser.error("consumer.zip is required")
    if args.check:
        report = check_archive(args.archive)
        print(report.text())
        return 0 if report.ok else 1
    if not (args.producer and args.user):
        parser.error("--producer and --user are required to start a consumer")
    overrides = {
        name: value
        for name, value in (("cartd_url", args.cartd_url), ("ingest_url", args.ingest_url))
        if value
    }
    options = ConsumerOptions(
        archive=args.archive,
        producer=producer_from(args),
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        concurrency=args.concurrency,
        timeout=args.timeout,
        init_timeout=args.init_timeout,
        grace=args.grace,
        workdir=args.workdir,
        settings=overrides,
    )
    try:
        return run(options)
    except DispatcherError as exc:
        progress(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
