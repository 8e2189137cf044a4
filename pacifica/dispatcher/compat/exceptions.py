"""Upstream 0.2.5's ``pacifica.dispatcher.exceptions``: the event errors, from ``errors``.

Unlike upstream they derive from ``Exception`` (through ``DispatcherError``),
so ``except Exception`` in a handler or the worker catches them.
"""

from __future__ import annotations

from pacifica.dispatcher.errors import EventError, TransactionDuplicateAttributeError

__all__ = ["EventError", "TransactionDuplicateAttributeError"]
