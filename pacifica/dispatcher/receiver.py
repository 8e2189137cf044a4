"""Upstream 0.2.5's module path; the names live in ``pacifica.dispatcher.compat.receiver``."""

from pacifica.dispatcher.compat.receiver import ReceiveTaskModel, create_peewee_model

__all__ = ["ReceiveTaskModel", "create_peewee_model"]
