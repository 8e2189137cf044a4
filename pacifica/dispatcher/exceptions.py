"""Upstream 0.2.5's module path; the names live in ``pacifica.dispatcher.compat.exceptions``."""

from pacifica.dispatcher.compat.exceptions import EventError, TransactionDuplicateAttributeError

__all__ = ["EventError", "TransactionDuplicateAttributeError"]
