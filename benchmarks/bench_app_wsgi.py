"""WSGI entry of the benchmark's project, for uWSGI: ``benchmarks.bench_app_wsgi:application``."""

from __future__ import annotations

from benchmarks.bench_app import create_router
from pacifica.dispatcher.service import wsgi_app_from_env

application = wsgi_app_from_env(create_router)
