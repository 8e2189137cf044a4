"""Upstream pacifica-dispatcher 0.2.5 names, so existing projects run unchanged.

Thin adapters onto the new API; nothing new is built on them (new code and
the template use the new names):

* ``Event`` (``event.py``): ``cloudevents.model.Event`` of cloudevents-python
  0.2.1, the one import an upstream project changes
  (``from pacifica.dispatcher.compat import Event``).
* ``receiver.py``: ``create_peewee_model(db)`` and the model's
  ``create_celery_app``/``create_cherrypy_app``, giving an upstream
  ``__main__.py`` the durable receiver and worker
  (also importable as ``pacifica.dispatcher.receiver``).
* ``exceptions.py``: ``EventError``, ``TransactionDuplicateAttributeError``
  (also ``pacifica.dispatcher.exceptions``).
* ``clients.py``: the endpoints and auth of pacifica-downloader/uploader
  objects, for the runners.

The rest of the upstream API (``router``, ``event_handlers``, ``models``,
the runners) keeps its upstream names in its own modules.
"""

from __future__ import annotations

from pacifica.dispatcher.compat.event import Event

__all__ = ["Event"]
