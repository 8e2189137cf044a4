"""CloudEvents in and out over HTTP: legacy 0.1, 1.0 structured, binary and batch.

``parse_http`` turns a request into ``ReceivedEvent`` values. Each keeps the
JSON document that routes match against (the structured JSON as received, or
its structured equivalent for a binary-mode event) and a ``cloudevents.core``
CloudEvent for handlers. Pacifica Metadata still emits CloudEvents 0.1; those
attributes are mapped to 1.0 names for the CloudEvent, while the document keeps
the original names so existing Pacifica JSONPaths keep matching.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, cast

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.exceptions import BaseCloudEventException, CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from pacifica.dispatcher.errors import InvalidEventError, UnsupportedContentTypeError

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
# Deepest nesting of objects and arrays accepted in an event (Pacifica's events nest about 5).
MAX_DEPTH = 64
_JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.\-]+\+)?json$")
_LEGACY_ATTRIBUTES = {
    "eventID": "id",
    "eventType": "type",
    "source": "source",
    "eventTime": "time",
    "contentType": "datacontenttype",
    "schemaURL": "dataschema",
}
_V1_CORE = frozenset(
    {"id", "source", "type", "specversion", "time", "datacontenttype", "dataschema", "subject"}
)


@dataclass(frozen=True)
class ReceivedEvent:
    """One received event: the document routes match, and the CloudEvent handlers get."""

    document: dict[str, Any]
    event: CloudEvent

    @property
    def id(self) -> str:
        """The event id (``eventID`` of a 0.1 event)."""
        return self.event.get_id()

    @property
    def source(self) -> str:
        """The event source."""
        return self.event.get_source()

    @property
    def type(self) -> str:
        """The event type (``eventType`` of a 0.1 event)."""
        return self.event.get_type()

    @property
    def time(self) -> datetime | None:
        """The event's own time, or None when it gave none (the SDK would invent one)."""
        if "eventTime" not in self.document and "time" not in self.document:
            return None
        return self.event.get_time()

    @property
    def specversion(self) -> str:
        """The CloudEvents version the event arrived in: ``0.1`` or ``1.0``."""
        return str(self.document.get("cloudEventsVersion") or self.document.get("specversion"))


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header value."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str | None) -> bool:
    """True for application/json, text/json and any ``+json`` type."""
    return bool(_JSON_TYPE.match(media_type(content_type)))


def parse_http(headers: Mapping[str, str], body: bytes) -> list[ReceivedEvent]:
    """Parse an HTTP request into its events (one, or several for a batch).

    Raises:
        UnsupportedContentTypeError: the Content-Type is not a CloudEvents mode we accept.
        InvalidEventError: the body is not valid JSON or not a valid CloudEvent.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type")
    if "ce-specversion" in lowered:
        return check_limits([parse_binary(lowered, body)], body)
    kind = media_type(content_type)
    if kind == BATCH:
        items = _load_json(body)
        if not isinstance(items, list):
            raise InvalidEventError("a batch must be a JSON array of events")
        if not items:
            raise InvalidEventError("a batch must hold at least one event")
        return check_limits([parse_document(item, index=i) for i, item in enumerate(items)], body)
    if kind == STRUCTURED or is_json_media_type(kind):
        return check_limits([parse_document(_load_json(body))], body)
    if not kind:
        raise UnsupportedContentTypeError(
            "Content-Type is missing; send application/json, "
            f"{STRUCTURED}, {BATCH} or a binary-mode event with ce-* headers"
        )
    raise UnsupportedContentTypeError(
        f"unsupported Content-Type {kind!r}; send application/json, {STRUCTURED}, "
        f"{BATCH} or a binary-mode event with ce-* headers"
    )


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidEventError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidEventError(
            f"the body is nested deeper than {MAX_DEPTH} levels", attribute="data"
        ) from exc


def check_depth(document: Any, where: str = "") -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` (objects and arrays within each other).

    Deeper documents are no Pacifica event; they would exhaust the stack of
    whatever walks them later (a JSONPath, a JSON encoder), so they stop here.

    Raises:
        InvalidEventError: the document is nested too deeply.
    """
    level: list[Any] = [document]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for value in level
            if isinstance(value, (dict, list))
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))
        ]
        if not level:
            return
    raise InvalidEventError(
        f"{where}the event is nested deeper than {MAX_DEPTH} levels", attribute="data"
    )


def parse_document(document: Any, index: int | None = None) -> ReceivedEvent:
    """Build a ``ReceivedEvent`` from a structured JSON document (0.1 or 1.0).

    Raises:
        InvalidEventError: the document is not an object or not a valid CloudEvent.
    """
    where = "" if index is None else f"event {index}: "
    if not isinstance(document, dict):
        raise InvalidEventError(
            f"{where}an event must be a JSON object, got {_json_kind(document)}"
        )
    check_depth(document, where)
    try:
        if "cloudEventsVersion" in document:
            event = _from_legacy(document)
        elif "specversion" in document:
            event = _from_structured(document)
        else:
            raise InvalidEventError(
                "missing 'specversion' (CloudEvents 1.0) or 'cloudEventsVersion' (0.1)",
                attribute="specversion",
            )
    except InvalidEventError as exc:
        raise InvalidEventError(f"{where}{exc}", attribute=exc.attribute) from exc
    return ReceivedEvent(document=document, event=event)


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _from_legacy(document: dict[str, Any]) -> CloudEvent:
    version = document["cloudEventsVersion"]
    if version != "0.1":
        raise InvalidEventError(
            f"unsupported cloudEventsVersion {version!r}; expected '0.1'",
            attribute="cloudEventsVersion",
        )
    for name in ("eventID", "eventType", "source"):
        _require_string(document, name)
    attributes: dict[str, Any] = {"specversion": "1.0"}
    for old, new in _LEGACY_ATTRIBUTES.items():
        if document.get(old) is not None:
            attributes[new] = document[old]
    if "time" in attributes:
        attributes["time"] = parse_time(attributes["time"], "eventTime")
    if document.get("eventTypeVersion") is not None:
        attributes["eventtypeversion"] = document["eventTypeVersion"]
    extensions = document.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise InvalidEventError("'extensions' must be an object", attribute="extensions")
    for name, value in extensions.items():
        attributes.setdefault(extension_name(name), value)
    data = document.get("data")
    if isinstance(data, str) and is_json_media_type(attributes.get("datacontenttype")):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise InvalidEventError(f"'data' is not valid JSON: {exc}", attribute="data") from exc
    return _build(attributes, data)


def extension_name(name: str) -> str:
    """A legacy extension name made valid for CloudEvents 1.0 (lower-case alphanumerics, ≤ 20)."""
    cleaned = re.sub(r"[^a-z0-9]", "", str(name).lower())[:20] or "extension"
    return f"x{cleaned}"[:20] if cleaned in _V1_CORE or cleaned == "data" else cleaned


def _from_structured(document: dict[str, Any]) -> CloudEvent:
    if document["specversion"] != "1.0":
        raise InvalidEventError(
            f"unsupported specversion {document['specversion']!r}; expected '1.0'",
            attribute="specversion",
        )
    for name in ("id", "type", "source"):
        _require_string(document, name)
    attributes = {k: v for k, v in document.items() if k not in ("data", "data_base64")}
    if "time" in attributes:
        attributes["time"] = parse_time(attributes["time"], "time")
    data: Any = document.get("data")
    if "data_base64" in document:
        try:
            data = base64.b64decode(document["data_base64"], validate=True)
        except (TypeError, ValueError) as exc:
            raise InvalidEventError(
                "'data_base64' is not valid base64", attribute="data_base64"
            ) from exc
    return _build(attributes, data)


def parse_binary(headers: Mapping[str, str], body: bytes) -> ReceivedEvent:
    """Parse a binary-mode event (``ce-*`` headers, data in the body); headers in lower case.

    The document routes match is the event's structured-mode JSON equivalent.

    Raises:
        InvalidEventError: a required attribute is missing or invalid.
    """
    if headers.get("ce-specversion") != "1.0":
        raise InvalidEventError(
            f"unsupported ce-specversion {headers.get('ce-specversion')!r}; expected '1.0'",
            attribute="specversion",
        )
    for name in ("id", "type", "source"):
        if not headers.get(f"ce-{name}"):
            raise InvalidEventError(f"missing required header 'ce-{name}'", attribute=name)
    try:
        event = ce_http.from_binary(
            ce_http.HTTPMessage(headers=dict(headers), body=body), JSONFormat(), _build
        )
    except InvalidEventError:
        raise
    except (ValueError, OverflowError) as exc:  # dateutil's parser for ce-time
        raise InvalidEventError(f"invalid 'ce-time': {exc}", attribute="time") from exc
    built = cast(CloudEvent, event)  # _build is the factory, so this is our v1 CloudEvent
    document = to_document(built)
    check_depth(document)
    return ReceivedEvent(document=document, event=built)


def _require_string(document: Mapping[str, Any], name: str) -> None:
    value = document.get(name)
    if value is None:
        raise InvalidEventError(f"missing required attribute '{name}'", attribute=name)
    if not isinstance(value, str) or not value:
        raise InvalidEventError(f"attribute '{name}' must be a non-empty string", attribute=name)


def parse_time(value: Any, attribute: str) -> datetime:
    """Parse an RFC 3339 time; a time without a zone (as Pacifica sends) is taken as UTC.

    Raises:
        InvalidEventError: the value is not a string holding an RFC 3339 time.
    """
    if not isinstance(value, str):
        raise InvalidEventError(f"'{attribute}' must be an RFC 3339 string", attribute=attribute)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidEventError(
            f"'{attribute}' is not an RFC 3339 time: {value!r}", attribute=attribute
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _build(attributes: dict[str, Any], data: Any) -> CloudEvent:
    try:
        return CloudEvent(attributes, data)
    except CloudEventValidationError as exc:
        attribute = next(iter(exc.errors), None)
        raise InvalidEventError(str(exc), attribute=attribute) from exc
    except BaseCloudEventException as exc:
        raise InvalidEventError(str(exc)) from exc


def to_structured(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Serialise an event to a structured-mode HTTP message: (headers, body)."""
    message = ce_http.to_structured(event, JSONFormat())
    return dict(message.headers), message.body


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Serialise an event to a binary-mode HTTP message: (headers, body).

    The SDK (2.2) writes list data as a Python repr; JSON data is written as JSON here.
    """
    message = ce_http.to_binary(event, JSONFormat())
    headers = dict(message.headers)
    data = event.get_data()
    if isinstance(data, (list, dict, int, float, bool)):
        headers.setdefault("content-type", "application/json")
        return headers, json.dumps(data).encode("utf-8")
    return headers, message.body


def to_document(event: CloudEvent) -> dict[str, Any]:
    """The structured JSON object of an event (as its structured-mode body would carry)."""
    return json.loads(to_structured(event)[1])  # type: ignore[no-any-return]


# --- attribute limits (issue 12): what every database can store, checked before storing ---

# The stored attributes and their column lengths (storage/schema.py's EventRecord).
ATTRIBUTE_LIMITS = {"id": 255, "type": 255, "source": 1024, "datacontenttype": 255}
_LEGACY_NAMES = {"id": "eventID", "type": "eventType", "datacontenttype": "contentType"}
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def check_limits(events: list[ReceivedEvent], body: bytes = b"") -> list[ReceivedEvent]:
    """Refuse events no database can store as sent: over-long attributes, NUL, lone surrogates.

    SQLite ignores column lengths and PostgreSQL refuses NUL characters, so
    these are checked here, the same on every database. A lone surrogate
    (valid JSON text, ``"\\ud800"``) cannot be encoded as UTF-8 anywhere in
    the document; the body is scanned for the escape first, so only suspicious
    bodies are walked.

    Raises:
        InvalidEventError: the message names the attribute.
    """
    suspicious = _ESCAPED_SURROGATE.search(body) is not None or not body
    for received in events:
        legacy = "cloudEventsVersion" in received.document
        for name, limit in ATTRIBUTE_LIMITS.items():
            shown = _LEGACY_NAMES.get(name, name) if legacy else name
            value = received.event.get_attributes().get(name)
            if not isinstance(value, str):
                continue
            if len(value) > limit:
                raise InvalidEventError(
                    f"attribute '{shown}' is longer than {limit} characters", attribute=shown
                )
            if "\x00" in value:
                raise InvalidEventError(
                    f"attribute '{shown}' holds a NUL character", attribute=shown
                )
        if suspicious:
            _refuse_lone_surrogates(received.document)
    return events


def _refuse_lone_surrogates(document: dict[str, Any]) -> None:
    for name, value in document.items():
        try:
            json.dumps({name: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEventError(
                f"attribute '{_printable(name)}' holds a lone surrogate (not valid Unicode)",
                attribute=_printable(name),
            ) from None


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")
