"""``Event``: the CloudEvents 0.1 event object of ``cloudevents-python`` 0.2.1.

Upstream projects' handlers and tests build events with
``cloudevents.model.Event(document)``. That distribution owns the same
``cloudevents`` import name as the CNCF SDK this package uses, so the two
cannot be installed together; this class has the same constructor,
validation and attributes, and is the one import such a project changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# attribute name -> 0.1 field name, in the 0.1 specification's order
FIELDS = {
    "event_type": "eventType",
    "event_type_version": "eventTypeVersion",
    "cloud_events_version": "cloudEventsVersion",
    "source": "source",
    "event_id": "eventID",
    "event_time": "eventTime",
    "schema_url": "schemaURL",
    "content_type": "contentType",
    "extensions": "extensions",
    "data": "data",
}
REQUIRED = ("eventType", "eventID", "source", "cloudEventsVersion")
OPTIONAL_STRINGS = ("eventTypeVersion", "eventTime", "schemaURL", "contentType")


def _check_string(document: Mapping[str, Any], name: str, required: bool) -> None:
    value = document.get(name)
    if value is None:
        if required:
            raise RuntimeError(f"Missing required field {name}")
        return
    if not isinstance(value, str):
        raise RuntimeError(f"Field {name} must be a string")
    if value == "":
        raise RuntimeError(f"Field {name} must be a non-empty string")


class Event:
    """A CloudEvents 0.1 event: ``Event(document)``, its fields as ``event.event_id``, ``event.data``….

    Only the 0.1 fields are kept; ``data`` given as a JSON string with a JSON
    ``contentType`` is decoded, as upstream.

    Raises:
        RuntimeError: a required field is missing, or a string field is not a
            non-empty string (upstream's messages).
    """

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.d = {name: d[name] for name in FIELDS.values() if name in d}
        for name in REQUIRED:
            _check_string(self.d, name, required=True)
        for name in OPTIONAL_STRINGS:
            _check_string(self.d, name, required=False)
        content_type = self.d.get("contentType") or ""
        if isinstance(self.d.get("data"), str) and (
            content_type.startswith("application/json") or content_type.endswith("+json")
        ):
            self.d["data"] = json.loads(self.d["data"])

    def __getattr__(self, name: str) -> Any:
        if name in FIELDS:
            return self.__dict__["d"].get(FIELDS[name])
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """The event's 0.1 fields as a new dict."""
        return dict(self.d)

    @classmethod
    def create_from_dict(cls, d: Mapping[str, Any]) -> Event:
        """An event from attribute names (``event_id``, ``event_type``…) instead of 0.1 field names.

        Raises:
            KeyError: a key is not one of the attribute names.
            RuntimeError: the event is not valid (see ``Event``).
        """
        return cls({FIELDS[key]: value for key, value in d.items()})

    def __repr__(self) -> str:
        return f"Event({self.d!r})"
