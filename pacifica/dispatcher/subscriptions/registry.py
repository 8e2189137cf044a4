"""The subscription registry: validation, access rules and the JSON shape (secrets masked).

Subscriptions belong to the user named by the request's user header. Another
user's subscription, a deleted one and an unknown one all look the same: not
found. Secrets (basic password, header credentials, signing secret) are
stored but never returned, except a signing secret the server has just
generated, which is shown once in the answer to the request that made it.
"""

from __future__ import annotations

import base64
import logging
import secrets as secretslib
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from jsonpath2.path import Path

from pacifica.dispatcher.errors import InvalidSubscriptionError, NotFoundError
from pacifica.dispatcher.router import parse_jsonpath
from pacifica.dispatcher.storage import iso, utcnow
from pacifica.dispatcher.storage import subscriptions as stored
from pacifica.dispatcher.storage.subscriptions import SubscriptionRow
from pacifica.dispatcher.subscriptions.addresses import AddressPolicy

log = logging.getLogger(__name__)
MASK = "********"
SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks prefix, not a password)
WRITABLE = frozenset({"name", "jsonpath", "target_url", "extensions", "auth", "disabled", "secret"})
READ_ONLY = frozenset({"uuid", "user", "created", "updated", "version", "deleted", "error"})
REQUIRED = ("name", "jsonpath", "target_url")
# Limits on what a user may ask the workers to evaluate or call (issue 12).
JSONPATH_MAX_LENGTH = 1024
JSONPATH_MAX_NESTING = 8  # brackets and parentheses inside each other
JSONPATH_MAX_DESCENTS = 2  # recursive-descent steps ('..'), filters included
TARGET_URL_MAX_LENGTH = 2048


def compile_jsonpath(text: Any) -> Path:
    """Parse a subscription's JSONPath; a path without ``$`` is taken from the root (``data``).

    Raises:
        InvalidSubscriptionError: it is not a string or does not parse (the parser's message is quoted).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidSubscriptionError("'jsonpath' must be a non-empty string", "jsonpath")
    stripped = text.strip()
    if not stripped.startswith("$"):
        stripped = "$" + ("" if stripped.startswith(("[", ".")) else ".") + stripped
    try:
        return parse_jsonpath(stripped)
    except ValueError as exc:
        raise InvalidSubscriptionError(
            f"'jsonpath' {text!r} does not parse: {exc}", "jsonpath"
        ) from exc


def new_secret() -> str:
    """A fresh Standard Webhooks signing secret (``whsec_`` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secretslib.token_bytes(32)).decode()


def _check_secret(value: str) -> str:
    try:
        raw = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        raw = b""
    if not 24 <= len(raw) <= 64:
        raise InvalidSubscriptionError(
            "'secret' must be 'whsec_' + base64 of 24 to 64 bytes, true (generate one) or null",
            "secret",
        )
    return value


def _check_auth(auth: Any, stored: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(auth, dict):
        raise InvalidSubscriptionError("'auth' must be an object", "auth")
    if not auth:
        return {}
    kind = auth.get("type")
    needed = {"basic": ("username", "password"), "header": ("type", "credentials")}
    if kind not in needed:
        raise InvalidSubscriptionError("'auth.type' must be 'basic' or 'header'", "auth.type")
    inner = auth.get(kind)
    if not isinstance(inner, dict):
        raise InvalidSubscriptionError(f"'auth.{kind}' must be an object", f"auth.{kind}")
    secret_key = needed[kind][1]
    if inner.get(secret_key) == MASK and stored.get("type") == kind:
        inner = {**inner, secret_key: stored[kind][secret_key]}  # GET-modify-PUT keeps the secret
    for name in needed[kind]:
        if not isinstance(inner.get(name), str):
            raise InvalidSubscriptionError(
                f"'auth.{kind}.{name}' must be a string", f"auth.{kind}.{name}"
            )
    return {"type": kind, kind: {name: inner[name] for name in needed[kind]}}


def _check_target(url: Any, policy: AddressPolicy) -> str:
    """A target URL: http(s), no credentials in it, and a host the address policy allows.

    Messages never quote the URL (its query string may hold a token).
    """
    if not isinstance(url, str) or len(url) > TARGET_URL_MAX_LENGTH:
        raise InvalidSubscriptionError(
            f"'target_url' must be an http:// or https:// URL of at most "
            f"{TARGET_URL_MAX_LENGTH} characters",
            "target_url",
        )
    try:
        parsed = urlsplit(url)
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host = port = None
    if parsed.scheme not in ("http", "https") or not host or any(c in url for c in " \t\r\n"):
        raise InvalidSubscriptionError(
            "'target_url' must be an http:// or https:// URL", "target_url"
        )
    del port  # parsed only to refuse a malformed one (ValueError above)
    if parsed.username is not None or parsed.password is not None:
        raise InvalidSubscriptionError(
            "'target_url' may not hold credentials (user:password@); put them in 'auth' "
            '({"type": "basic", "basic": {"username": ..., "password": ...}})',
            "target_url",
        )
    if policy.refused_addresses(host):
        raise InvalidSubscriptionError(
            f"'target_url' host {host!r} is an internal address (loopback, private, link-local, "
            "multicast or unspecified); the site's ALLOWED_TARGET_NETWORKS does not cover it",
            "target_url",
        )
    return url


def check_jsonpath_limits(text: str) -> None:
    """Refuse JSONPaths too long, too nested or with too many recursive descents to evaluate cheaply.

    Raises:
        InvalidSubscriptionError: a limit is exceeded (the message says which).
    """
    if len(text) > JSONPATH_MAX_LENGTH:
        raise InvalidSubscriptionError(
            f"'jsonpath' is longer than {JSONPATH_MAX_LENGTH} characters", "jsonpath"
        )
    depth = deepest = descents = 0
    quote: str | None = None
    previous = ""
    for char in text:
        seen = char
        if quote is not None:
            quote = None if char == quote and previous != "\\" else quote
        elif char in "\"'":
            quote = char
        elif char in "[(":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "])":
            depth -= 1
        elif char == "." and previous == ".":
            descents += 1
            seen = ""  # '...' is one descent and a dot, not two descents
        previous = seen
    if deepest > JSONPATH_MAX_NESTING:
        raise InvalidSubscriptionError(
            f"'jsonpath' nests brackets more than {JSONPATH_MAX_NESTING} deep", "jsonpath"
        )
    if descents > JSONPATH_MAX_DESCENTS:
        raise InvalidSubscriptionError(
            f"'jsonpath' has {descents} recursive descents ('..'); at most "
            f"{JSONPATH_MAX_DESCENTS} are allowed",
            "jsonpath",
        )


def check_text(value: Any, where: str) -> None:
    """Refuse NUL characters and lone surrogates anywhere in a JSON value (no database stores them).

    Raises:
        InvalidSubscriptionError: one is found; ``field`` is the top-level field holding it.
    """
    if isinstance(value, str):
        if "\x00" in value or _has_lone_surrogate(value):
            raise InvalidSubscriptionError(
                f"'{where}' holds a NUL character or a lone surrogate", where
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, where)
    elif isinstance(value, list):
        for item in value:
            check_text(item, where)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_disabled(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=utcnow().tzinfo)
    raise InvalidSubscriptionError("'disabled' must be null or an ISO 8601 date-time", "disabled")


@dataclass
class Changes:
    """Validated field values to store, and a secret generated for this request (shown once)."""

    values: dict[str, Any] = field(default_factory=dict)
    generated_secret: str | None = None


def validate(
    body: Any, current: SubscriptionRow | None = None, policy: AddressPolicy | None = None
) -> Changes:
    """Check a POST (``current`` None) or PUT body against the schema and access rules.

    ``policy`` decides which target hosts are allowed (default: public addresses only).

    Raises:
        InvalidSubscriptionError: the body breaks a rule; ``field`` names the field.
    """
    if not isinstance(body, dict):
        raise InvalidSubscriptionError("the body must be a JSON object")
    for name in body:
        if name not in WRITABLE | READ_ONLY:
            raise InvalidSubscriptionError(f"unknown field {str(name)[:100]!r}", str(name))
        check_text(body[name], name)
        if name in READ_ONLY and (current is None or body[name] != to_json(current)[name]):
            raise InvalidSubscriptionError(f"{name!r} is set by the server", name)
    if current is None:
        for name in REQUIRED:
            if name not in body:
                raise InvalidSubscriptionError(f"{name!r} is required", name)
    return _convert(body, current, policy or AddressPolicy())


def _convert(
    body: dict[str, Any], current: SubscriptionRow | None, policy: AddressPolicy
) -> Changes:
    changes = Changes()
    values = changes.values
    if "name" in body:
        if not isinstance(body["name"], str) or not 0 < len(body["name"]) <= 255:
            raise InvalidSubscriptionError("'name' must be a string of 1 to 255 characters", "name")
        values["name"] = body["name"]
    if "jsonpath" in body:
        compile_jsonpath(body["jsonpath"])
        check_jsonpath_limits(body["jsonpath"])
        values["jsonpath"] = body["jsonpath"]
    if "target_url" in body:
        values["target_url"] = _check_target(body["target_url"], policy)
    if "extensions" in body:
        if not isinstance(body["extensions"], dict):
            raise InvalidSubscriptionError("'extensions' must be an object", "extensions")
        values["extensions"] = body["extensions"]
    if "auth" in body:
        values["auth"] = _check_auth(body["auth"], current.auth if current else {})
    if "disabled" in body:
        values["disabled"] = _check_disabled(body["disabled"])
        if values["disabled"] is None:
            values.update(error=None, failures=0)
    if "secret" in body:
        changes.generated_secret = _convert_secret(body["secret"], values, current)
    return changes


def _convert_secret(
    secret: Any, values: dict[str, Any], current: SubscriptionRow | None
) -> str | None:
    """Store ``secret`` in ``values``; return it when it was generated here (shown once)."""
    if secret is True:
        values["secret"] = new_secret()
        return str(values["secret"])
    if secret is None:
        values["secret"] = None
    elif not isinstance(secret, str):
        raise InvalidSubscriptionError("'secret' must be a string, true or null", "secret")
    elif not (secret == MASK and current is not None and current.secret):
        values["secret"] = _check_secret(secret)
    return None


def to_json(subscription: SubscriptionRow, shown_secret: str | None = None) -> dict[str, Any]:
    """The API shape of a subscription, with secrets masked."""
    auth = dict(subscription.auth or {})
    kind = auth.get("type")
    if kind in ("basic", "header"):
        secret_key = "password" if kind == "basic" else "credentials"
        auth[kind] = {**auth[kind], secret_key: MASK}
    return {
        "user": subscription.user,
        "updated": iso(subscription.updated),
        "uuid": str(subscription.uuid),
        "deleted": iso(subscription.deleted),
        "version": subscription.version,
        "jsonpath": subscription.jsonpath,
        "disabled": iso(subscription.disabled),
        "created": iso(subscription.created),
        "name": subscription.name,
        "extensions": subscription.extensions or {},
        "auth": auth,
        "target_url": subscription.target_url,
        "error": subscription.error,
        "secret": shown_secret or (MASK if subscription.secret else None),
    }


def parse_uuid(text: str) -> uuidlib.UUID:
    """A subscription id from a URL.

    Raises:
        InvalidSubscriptionError: it is not a UUID.
    """
    try:
        return uuidlib.UUID(text)
    except (ValueError, TypeError, AttributeError):
        raise InvalidSubscriptionError(f"{text!r} is not a UUID", "uuid") from None


def get(user: str, key: str) -> SubscriptionRow:
    """The caller's live subscription with this id.

    Raises:
        InvalidSubscriptionError: the id is not a UUID.
        NotFoundError: no such subscription for this user (or it was deleted).
    """
    row = stored.get_subscription(user, parse_uuid(key))
    if row is None:
        raise NotFoundError(f"no subscription {key} for user {user!r}")
    return row


def list_for(user: str) -> list[SubscriptionRow]:
    """The caller's subscriptions that are not deleted (disabled ones included), oldest first."""
    return stored.subscriptions_of(user)


def create(user: str, body: Any, policy: AddressPolicy | None = None) -> dict[str, Any]:
    """Validate and store a new subscription; return its API shape.

    Raises:
        InvalidSubscriptionError: the body breaks the schema.
    """
    changes = validate(body, policy=policy)
    return to_json(stored.insert_subscription(user, changes.values), changes.generated_secret)


def update(user: str, key: str, body: Any, policy: AddressPolicy | None = None) -> dict[str, Any]:
    """Change the fields a user may change; ``"disabled": null`` re-enables.

    Raises:
        InvalidSubscriptionError: a bad id or body.
        NotFoundError: no such subscription for this user.
    """
    row = get(user, key)
    changes = validate(body, row, policy)
    updated = stored.update_subscription(row.uuid, changes.values)
    return to_json(updated, changes.generated_secret)


def delete(user: str, key: str) -> None:
    """Soft-delete the caller's subscription.

    Raises:
        InvalidSubscriptionError: a bad id.
        NotFoundError: no such subscription for this user.
    """
    stored.update_subscription(get(user, key).uuid, {"deleted": utcnow()})
