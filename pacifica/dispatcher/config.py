"""Settings: the one place that reads environment variables and INI files.

Every setting has an environment variable; an optional INI file (section
``[dispatcher]``, keys are the variable names in lower case) supplies values
the environment does not set. Nothing here runs at import time: call
``Settings.from_env()`` in a composition root and pass the result down.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pacifica.dispatcher.errors import ConfigurationError

CONFIG_FILE_ENV = "DISPATCHER_CONFIG"
INI_SECTION = "dispatcher"
AUTH_TYPES = ("none", "basic", "header", "clientssl")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _networks(text: str) -> str:
    from ipaddress import ip_network

    for entry in text.replace(",", " ").split():
        ip_network(entry, strict=False)  # ValueError names the bad entry
    return text


def _setting(env: str, default: Any, doc: str, parse: Callable[[str], Any] = str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with its environment variable and default (see README)."""

    data_dir: str = _setting(
        "DISPATCHER_DATA_DIR",
        "~/.pacifica-dispatcher",
        "Directory for the embedded SQLite database and broker files.",
    )
    database_url: str | None = _setting(
        "DATABASE_URL",
        None,
        "peewee database URL (sqlite:///…, postgresql://…, mysql://…); "
        "default: a SQLite file in DISPATCHER_DATA_DIR. Upstream's PEEWEE_URL is an alias.",
    )
    broker_url: str | None = _setting(
        "BROKER_URL",
        None,
        "Celery broker (redis://…, amqp://…); default: the embedded broker, a directory "
        "in DISPATCHER_DATA_DIR (kombu filesystem transport), with a worker started by `serve`.",
    )
    backend_url: str | None = _setting(
        "BACKEND_URL", None, "Celery result backend; not needed (the database records results)."
    )
    max_body_bytes: int = _setting(
        "MAX_BODY_SIZE", 10 * 1024 * 1024, "Largest accepted request body, bytes.", _positive_int
    )
    processing_lease: float = _setting(
        "PROCESSING_LEASE",
        3600.0,
        "Seconds an event may stay '102 Processing' before it is taken as lost and re-enqueued; "
        "longer than your slowest handler.",
        _positive_float,
    )
    requeue_after: float = _setting(
        "REQUEUE_AFTER",
        30.0,
        "Seconds an event may wait in '202 Accepted' before it is re-enqueued.",
        _positive_float,
    )
    requeue_interval: float = _setting(
        "REQUEUE_INTERVAL",
        30.0,
        "How often a worker looks for stranded events, seconds.",
        _positive_float,
    )
    database_connect_attempts: int = _setting(
        "DATABASE_CONNECT_ATTEMPTS",
        10,
        "Connection attempts at start before giving up (a database still starting).",
        _positive_int,
    )
    database_connect_wait: float = _setting(
        "DATABASE_CONNECT_WAIT",
        3.0,
        "Seconds between connection attempts at start; also how long a worker waits before "
        "retrying a message while the database is unreachable.",
        _positive_float,
    )
    heartbeat_interval: float = _setting(
        "WORKER_HEARTBEAT",
        5.0,
        "How often each worker records that it is alive, seconds.",
        _positive_float,
    )
    worker_dead_after: float = _setting(
        "WORKER_DEAD_AFTER",
        30.0,
        "Seconds without a heartbeat after which a worker is taken as dead and the events it "
        "held go back to the queue (a live worker keeps its events however long they run).",
        _positive_float,
    )
    retention_days: float | None = _setting(
        "RETENTION_DAYS",
        None,
        "Purge final events (with their route runs and deliveries) older than this many days; "
        "unset keeps everything.",
        _positive_float,
    )
    worker_concurrency: int = _setting(
        "WORKER_CONCURRENCY", 2, "Worker processes started by `serve` and `worker`.", _positive_int
    )
    worker_prefetch: int = _setting(
        "WORKER_PREFETCH",
        4,
        "Messages each worker process reserves ahead (unacknowledged until done, so a crash "
        "returns them); use 1 when handlers are long.",
        _positive_int,
    )
    events_per_message: int = _setting(
        "EVENTS_PER_MESSAGE",
        20,
        "Most events one broker message carries (events arriving together share a message; "
        "a worker hands back the rest of a message as single-event messages once it has spent "
        "a second on it, so slow handlers still run in parallel).",
        _positive_int,
    )
    user_header: str = _setting(
        "USER_HEADER", "Http-Remote-User", "Request header that names the subscription owner."
    )
    default_user: str | None = _setting(
        "DEFAULT_USER", None, "Owner used when the user header is absent; unset means 401."
    )
    policy_url: str | None = _setting(
        "POLICY_URL", None, "Pacifica policy service; unset means every match is allowed."
    )
    request_timeout: float = _setting(
        "REQUEST_TIMEOUT",
        30.0,
        "Timeout of every outgoing HTTP request (policy, webhooks, cartd, ingest), seconds.",
        _positive_float,
    )
    delivery_max_attempts: int = _setting(
        "DELIVERY_MAX_ATTEMPTS",
        10,
        "Attempts per delivery before it is dead-lettered.",
        _positive_int,
    )
    delivery_max_age: float = _setting(
        "DELIVERY_MAX_AGE",
        86400.0,
        "Seconds after which a failing delivery is dead-lettered whatever its attempts.",
        _positive_float,
    )
    delivery_backoff: float = _setting(
        "DELIVERY_BACKOFF",
        2.0,
        "First retry delay, seconds; doubles per attempt (with full jitter), capped at one hour.",
        _positive_float,
    )
    disable_after: int = _setting(
        "DISABLE_AFTER",
        5,
        "Consecutive dead-lettered deliveries after which a subscription is disabled.",
        _positive_int,
    )
    cartd_url: str = _setting(
        "CARTD_URL", "http://127.0.0.1:8081", "Pacifica cartd, for downloading transaction files."
    )
    ingest_url: str = _setting(
        "INGEST_URL", "http://127.0.0.1:8066", "Pacifica ingest, for uploading new transactions."
    )
    ingest_upload_path: str = _setting(
        "INGEST_UPLOAD_PATH", "/upload", "Path of ingest's bundle upload endpoint."
    )
    ingest_status_path: str = _setting(
        "INGEST_STATUS_PATH", "/get_state", "Path of ingest's job state endpoint."
    )
    auth_type: str = _setting(
        "AUTHENTICATION_TYPE", "none", "Auth for cartd/ingest: none, basic, header or clientssl."
    )
    auth_username: str | None = _setting("AUTHENTICATION_USERNAME", None, "Basic auth user.")
    auth_password: str | None = _setting("AUTHENTICATION_PASSWORD", None, "Basic auth password.")
    auth_header: str | None = _setting(
        "AUTHENTICATION_HEADER",
        None,
        "Header auth, as 'Name: value' (e.g. 'X-Http-Authed-User: 10').",
    )
    auth_cert: str | None = _setting("AUTHENTICATION_CERT", None, "Client certificate file.")
    auth_key: str | None = _setting("AUTHENTICATION_KEY", None, "Client certificate key file.")
    tls_verify: str = _setting(
        "TLS_VERIFY", "true", "Verify TLS: true, false, or the path of a CA bundle."
    )
    transfer_timeout: float = _setting(
        "TRANSFER_TIMEOUT",
        180.0,
        "Seconds to wait for a cart to be ready or an ingest job to finish.",
        _positive_float,
    )
    # Issue 12 (hostile input and noisy neighbours): outgoing addresses, delivery pool, budgets.
    allowed_target_networks: str | None = _setting(
        "ALLOWED_TARGET_NETWORKS",
        None,
        "Comma-separated CIDR networks webhook targets may reach although they are internal "
        "(loopback, private, link-local, unique-local...; e.g. '127.0.0.0/8, ::1/128'); "
        "unset: only globally routable addresses.",
        _networks,
    )
    delivery_concurrency: int = _setting(
        "DELIVERY_CONCURRENCY",
        8,
        "Delivery worker threads (webhooks run on their own queue and pool, started by `serve` "
        "and `worker --deliveries`).",
        _positive_int,
    )
    delivery_host_limit: int = _setting(
        "DELIVERY_HOST_LIMIT",
        4,
        "Most deliveries in flight to one target host:port across all workers; keep it below "
        "DELIVERY_CONCURRENCY so a slow host cannot hold every delivery thread.",
        _positive_int,
    )
    jsonpath_budget: int = _setting(
        "JSONPATH_BUDGET",
        1000000,
        "Evaluation steps (Python calls) one subscription's JSONPath may take on one event "
        "when jsonpath2 interprets it ('..', unions, functions); a subscription over budget "
        "is disabled with the reason.",
        _positive_int,
    )
    server_threads: int = _setting(
        "SERVER_THREADS",
        64,
        "Threads of the built-in HTTP server (`serve`): how many slow clients it can hold "
        "while still answering others.",
        _positive_int,
    )
    server_socket_timeout: float = _setting(
        "SERVER_SOCKET_TIMEOUT",
        10.0,
        "Built-in server: seconds a client may stay silent while sending headers or body.",
        _positive_float,
    )

    # Issue 15 (operations): the operator page's administrators.
    admin_users: str | None = _setting(
        "ADMIN_USERS",
        None,
        "Comma-separated users (as USER_HEADER names them) who see every subscription and "
        "delivery on the operator page (/ui/) and may retry and re-enable any; others see "
        "their own.",
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, config_file: str | None = None
    ) -> Settings:
        """Build settings from the environment, then the INI file, then the defaults.

        Raises:
            ConfigurationError: a value cannot be parsed, or the INI file is unreadable.
        """
        env = dict(os.environ if environ is None else environ)
        if "DATABASE_URL" not in env and env.get("PEEWEE_URL"):
            env["DATABASE_URL"] = env["PEEWEE_URL"]
        ini = _read_ini(config_file or env.get(CONFIG_FILE_ENV))
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = spec.metadata["env"]
            text = env.get(name, ini.get(name.lower()))
            if text is None or text == "":
                continue
            try:
                values[spec.name] = spec.metadata["parse"](text)
            except ValueError as exc:
                raise ConfigurationError(f"{name}: {exc}") from exc
        return cls(**values).validated()

    def validated(self) -> Settings:
        """Return self after cross-field checks.

        Raises:
            ConfigurationError: an authentication type is unknown or incomplete.
        """
        if self.auth_type not in AUTH_TYPES:
            raise ConfigurationError(
                f"AUTHENTICATION_TYPE: expected one of {', '.join(AUTH_TYPES)}, got {self.auth_type!r}"
            )
        if self.auth_type == "basic" and not (self.auth_username and self.auth_password):
            raise ConfigurationError(
                "AUTHENTICATION_TYPE=basic needs AUTHENTICATION_USERNAME and AUTHENTICATION_PASSWORD"
            )
        if self.auth_type == "header" and ":" not in (self.auth_header or ""):
            raise ConfigurationError(
                "AUTHENTICATION_TYPE=header needs AUTHENTICATION_HEADER='Name: value'"
            )
        if self.auth_type == "clientssl" and not self.auth_cert:
            raise ConfigurationError("AUTHENTICATION_TYPE=clientssl needs AUTHENTICATION_CERT")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, for a child process (the embedded worker).

        Settings read from a config file reach the child this way too.
        """
        env = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None:
                env[spec.metadata["env"]] = str(value)
        return env

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (for tests and CLI flags)."""
        return replace(self, **changes).validated()

    @property
    def data_path(self) -> Path:
        """``data_dir`` with ``~`` expanded."""
        return Path(self.data_dir).expanduser()

    @property
    def admins(self) -> frozenset[str]:
        """``ADMIN_USERS`` as a set of user names."""
        return frozenset(u.strip() for u in (self.admin_users or "").split(",") if u.strip())

    @property
    def embedded_broker(self) -> bool:
        """True when no BROKER_URL is set and the broker is a directory of message files."""
        return self.broker_url is None

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file."""
        return self.database_url or f"sqlite:///{self.data_path / 'dispatcher.sqlite3'}"

    @property
    def effective_broker_url(self) -> str:
        """BROKER_URL, or the embedded broker (kombu's filesystem transport)."""
        return self.broker_url or "filesystem://"

    def requests_options(self) -> dict[str, Any]:
        """Keyword arguments for ``requests`` calls to cartd and ingest: auth, headers, cert, verify."""
        options: dict[str, Any] = {"verify": _verify(self.tls_verify)}
        if self.auth_type == "basic":
            options["auth"] = (self.auth_username, self.auth_password)
        elif self.auth_type == "header" and self.auth_header:
            name, _, value = self.auth_header.partition(":")
            options["headers"] = {name.strip(): value.strip()}
        elif self.auth_type == "clientssl":
            options["cert"] = (self.auth_cert, self.auth_key) if self.auth_key else self.auth_cert
        return options


def _verify(text: str) -> bool | str:
    try:
        return _bool(text)
    except ValueError:
        return text


def _read_ini(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, configparser.Error) as exc:
        raise ConfigurationError(f"{CONFIG_FILE_ENV}: cannot read {path}: {exc}") from exc
    return dict(parser[INI_SECTION]) if parser.has_section(INI_SECTION) else {}


def settings_table() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs and --help."""
    return [
        (
            spec.metadata["env"],
            "" if spec.default is None else str(spec.default),
            spec.metadata["doc"],
        )
        for spec in fields(Settings)
    ]
