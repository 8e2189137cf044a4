"""WSGI entry for uWSGI and gunicorn: ``pacifica.dispatcher.wsgi:application``.

This module is a composition root: importing it reads the settings and opens
the database, because WSGI servers look ``application`` up as a plain module
attribute (uWSGI does not trigger a module ``__getattr__``). Run uWSGI with
``--lazy-apps`` so each worker process imports it, and so opens its own
database connection, after the fork.
"""

from __future__ import annotations

from pacifica.dispatcher.service import wsgi_app_from_env

application = wsgi_app_from_env()
