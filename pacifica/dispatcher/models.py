"""Pacifica metadata records (Transaction, TransactionKeyValue, File, FileKeyValue) from an event.

Pacifica Metadata's ``org.pacifica.metadata.ingest`` event carries the ingest
request as a JSON list in ``data``: one item per record, told apart by its
``destinationTable`` (``Transactions.<field>``, ``TransactionKeyValue``,
``Files``, ``FileKeyValue``). These classes read that list; the upstream
``from_cloudevents_model`` names are kept as aliases. As upstream, records are
mutable and built from keywords, unknown keys ignored (``File(**item)``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from pacifica.dispatcher.errors import TransactionDuplicateAttributeError

_T = TypeVar("_T")


def event_data_items(event: Any) -> list[Mapping[str, Any]]:
    """Return the record objects of an event's data list.

    ``event`` may be a ``cloudevents.core`` CloudEvent, a ``ReceivedEvent``, an
    event document (a mapping with ``data``), the data list itself, or an
    upstream event object exposing ``data`` (``cloudevents.model.Event``).
    Non-object items are skipped; data that is not a list gives no records.

    Raises:
        TypeError: ``event`` is none of these (the message names its type).
    """
    data: Any
    if isinstance(event, list):
        data = event
    elif isinstance(event, Mapping):
        data = event.get("data")
    elif hasattr(event, "get_data"):
        data = event.get_data()
    elif hasattr(event, "event") and hasattr(event.event, "get_data"):
        data = event.event.get_data()
    elif hasattr(event, "data"):
        data = event.data
    else:
        raise TypeError(
            f"cannot read Pacifica records from a {type(event).__module__}.{type(event).__qualname__}: "
            "expected a CloudEvent, a ReceivedEvent, an event document or its data list"
        )
    if not isinstance(data, list):
        return []
    return [item for item in data if isinstance(item, Mapping)]


def _records(event: Any, table: str) -> Iterator[Mapping[str, Any]]:
    return (item for item in event_data_items(event) if item.get("destinationTable") == table)


def _from_record(cls: type[_T], record: Mapping[str, Any]) -> _T:
    return cls(**record)


class PacificaModel:
    """Base of the Pacifica records: keyword construction as upstream, unknown keys ignored.

    ``File(**item)`` takes a whole ``Files`` item (its ``destinationTable``
    is dropped); fields not given take their defaults. Subclasses are
    dataclasses with ``init=False``, so they compare and print by value and
    can be changed after they are built.
    """

    def __init__(self, **attrs: Any) -> None:
        for spec in fields(self):  # type: ignore[arg-type]
            default = None if spec.default is MISSING else spec.default
            setattr(self, spec.name, attrs.get(spec.name, default))


@dataclass(init=False)
class File(PacificaModel):
    """A file of a transaction (``destinationTable: "Files"``)."""

    _id: int | None = None
    name: str | None = None
    subdir: str | None = None
    size: int | None = None
    mimetype: str | None = None
    hashtype: str | None = None
    hashsum: str | None = None
    ctime: str | None = None
    mtime: str | None = None
    encoding: str | None = None
    suspense_date: str | None = None
    source: str | None = None

    @property
    def path(self) -> str:
        """The file's path relative to the transaction root: ``subdir`` joined with ``name``.

        Raises:
            AttributeError: the file has no name.
        """
        if self.name is None:
            raise AttributeError("field 'name' is None")
        if self.subdir is None:
            return self.name
        return os.path.join(self.subdir, self.name)

    @classmethod
    def from_event(cls, event: Any) -> list[File]:
        """Every ``Files`` record of the event, in order.

        Raises:
            TypeError: ``event`` is not an event (see ``event_data_items``).
        """
        return [_from_record(cls, r) for r in _records(event, "Files")]

    from_cloudevents_model = from_event


@dataclass(init=False)
class FileKeyValue(PacificaModel):
    """A key/value pair attached to one file (``destinationTable: "FileKeyValue"``)."""

    key: str | None = None
    value: Any = None
    file_id: int | None = None

    @classmethod
    def from_event(cls, event: Any) -> list[FileKeyValue]:
        """Every ``FileKeyValue`` record of the event, in order.

        Raises:
            TypeError: ``event`` is not an event (see ``event_data_items``).
        """
        return [_from_record(cls, r) for r in _records(event, "FileKeyValue")]

    from_cloudevents_model = from_event


@dataclass(init=False)
class TransactionKeyValue(PacificaModel):
    """A key/value pair attached to the transaction (``destinationTable: "TransactionKeyValue"``)."""

    key: str | None = None
    value: Any = None

    @classmethod
    def from_event(cls, event: Any) -> list[TransactionKeyValue]:
        """Every ``TransactionKeyValue`` record of the event, in order (duplicates kept).

        Raises:
            TypeError: ``event`` is not an event (see ``event_data_items``).
        """
        return [_from_record(cls, r) for r in _records(event, "TransactionKeyValue")]

    from_cloudevents_model = from_event


_TRANSACTION_PREFIX = "Transactions."


@dataclass(init=False)
class Transaction(PacificaModel):
    """The transaction itself, assembled from its ``Transactions.<field>`` records."""

    _id: int | None = None
    submitter: Any = None
    project: Any = None
    instrument: Any = None
    analytical_tool: Any = None
    description: str | None = None
    suspense_date: str | None = None

    @classmethod
    def from_event(cls, event: Any) -> Transaction:
        """The event's transaction; fields it does not give are None.

        Raises:
            TransactionDuplicateAttributeError: a ``Transactions.<field>`` is given twice.
            TypeError: ``event`` is not an event (see ``event_data_items``).
        """
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for item in event_data_items(event):
            table = item.get("destinationTable")
            if not isinstance(table, str) or not table.startswith(_TRANSACTION_PREFIX):
                continue
            name = table[len(_TRANSACTION_PREFIX) :]
            if name not in names:
                continue
            if name in values:
                raise TransactionDuplicateAttributeError(event, name)
            values[name] = item.get("value")
        return cls(**values)

    from_cloudevents_model = from_event

    def to_records(self) -> list[dict[str, Any]]:
        """The ``Transactions.<field>`` records for the fields that are set, ``_id`` first."""
        return [
            {"destinationTable": f"{_TRANSACTION_PREFIX}{f.name}", "value": getattr(self, f.name)}
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]
