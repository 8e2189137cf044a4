"""Building the application and running it on CherryPy's own server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cherrypy
from cheroot.server import HTTPConnection, HTTPRequest

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.service.http import encode_json
from pacifica.dispatcher.service.web.api import Get, LineageView, Root, Status
from pacifica.dispatcher.service.web.common import app_config
from pacifica.dispatcher.service.web.receiver import Accept, Receiver, Verify

KEEP_ALIVE_CONNECTIONS = 512  # open connections kept alive by the built-in server (cheroot: 10)


def create_app(
    settings: Settings,
    accept: Accept,
    mounts: dict[str, object] | None = None,
    verify: Verify | None = None,
) -> Receiver:
    """The WSGI application: receiver and status API, plus extra ``mounts`` (e.g. /eventmatch);
    ``verify`` checks every ``POST /receive`` before it is parsed."""
    root = Root({"status": Status(), "get": Get(), "lineage": LineageView(), **(mounts or {})})
    return Receiver(settings, accept, cherrypy.Application(root, "", app_config()), verify)


class JSONErrorRequest(HTTPRequest):
    """CherryPy's server's request, answering malformed HTTP (bad request line, headers or
    Content-Length) with the same JSON error shape as the application."""

    def simple_response(self, status: Any, msg: str = "") -> None:
        """Write a JSON error answer (the server's own, for requests the app never sees)."""
        status = str(status)
        if status[:3] in {"413", "414"}:
            self.close_connection = True
        body = encode_json({"status": status, "message": str(msg or status)})
        head = (
            f"{self.server.protocol} {status}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
        )
        with contextlib.suppress(OSError):  # the client is gone: nothing to answer
            self.conn.wfile.write(head.encode("ISO-8859-1") + b"\r\n" + body)


class JSONErrorConnection(HTTPConnection):
    """A connection of CherryPy's server whose requests answer malformed HTTP as JSON."""

    RequestHandlerClass = JSONErrorRequest


def serve(
    app: Receiver,
    host: str,
    port: int,
    config_file: str | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Run ``app`` on CherryPy's own server until interrupted."""
    cherrypy.config.update(
        {
            "server.socket_host": host,
            "server.socket_port": port,
            # Each slow client holds a thread; the socket timeout bounds each silent wait.
            "server.thread_pool": app.settings.server_threads,
            "server.socket_timeout": app.settings.server_socket_timeout,
            "server.socket_queue_size": 128,  # a burst of new clients is not refused
            "engine.autoreload.on": False,
            # Errors and accesses reach the root logger (the CLI configures it); no second copy.
            "log.screen": False,
            "checker.on": False,
        }
    )
    if config_file:
        cherrypy.config.update(config_file)
        app.fallback.merge(config_file)
    cherrypy.tree.graft(app, "")
    server = cherrypy.server
    server.httpserver, server.bind_addr = server.httpserver_from_self()
    server.httpserver.ConnectionClass = JSONErrorConnection
    # cheroot answers "Connection: close" once 10 connections are open, so 50 keep-alive
    # clients reconnected for ~1 request in 7 (BENCHMARKS.md, issue 17). An idle keep-alive
    # connection holds a file descriptor, not a thread.
    server.httpserver.keep_alive_conn_limit = KEEP_ALIVE_CONNECTIONS
    if on_stop is not None:
        cherrypy.engine.subscribe("stop", on_stop)
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()
    cherrypy.engine.start()
    cherrypy.engine.block()


def stop_serving() -> None:
    """Stop the server ``serve`` runs (from any thread); ``serve`` then returns."""
    cherrypy.engine.exit()
