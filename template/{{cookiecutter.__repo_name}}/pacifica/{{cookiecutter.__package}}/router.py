"""The router of {{ cookiecutter.__repo_name }}: which events run which handler.

``create_router(settings)`` builds it when a process starts; importing this
module reads no configuration and opens no connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pacifica.dispatcher import Router
from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.downloader_runners import (
    DownloaderRunner,
    LocalDownloaderRunner,
    RemoteDownloaderRunner,
)
from pacifica.dispatcher.uploader_runners import (
    LocalUploaderRunner,
    RemoteUploaderRunner,
    UploaderRunner,
)

from {{ cookiecutter.__import_path }}.event_handlers import (
    {{ cookiecutter.__handler_class }},
)

NAME = "{{ cookiecutter.__module }}"
JSONPATH_FILE = Path(__file__).with_name("jsonpath2") / f"{NAME}.txt"
# Stored with every result: keep it stable, or re-delivered events run the route again.
ROUTE_NAME = "{{ cookiecutter.__slug }}"
# Local stand-ins for Pacifica cartd and ingest (README: "Running without Pacifica").
LOCAL_DATA_ENV = "DISPATCHER_LOCAL_DATA"
OUTPUT_DIR_ENV = "DISPATCHER_OUTPUT_DIR"


def create_runners(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
) -> tuple[DownloaderRunner, UploaderRunner]:
    """The downloader and uploader: Pacifica cartd and ingest, or local directories.

    ``DISPATCHER_LOCAL_DATA=<dir>`` reads a transaction's files from
    ``<dir>/<subdir>/<name>`` instead of cartd; ``DISPATCHER_OUTPUT_DIR=<dir>``
    writes upload bundles (``<uuid>.tar``) there instead of sending them to ingest.
    """
    env = os.environ if environ is None else environ
    local_data = env.get(LOCAL_DATA_ENV)
    output_dir = env.get(OUTPUT_DIR_ENV)
    downloader: DownloaderRunner = (
        LocalDownloaderRunner(local_data)
        if local_data
        else RemoteDownloaderRunner.from_settings(settings)
    )
    uploader: UploaderRunner = (
        LocalUploaderRunner(output_dir)
        if output_dir
        else RemoteUploaderRunner.from_settings(settings)
    )
    return downloader, uploader


def create_router(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
) -> Router:
    """The project's routes: the JSONPath file mapped to its event handler."""
    downloader, uploader = create_runners(settings, environ)
    router = Router()
    router.add_route(
        JSONPATH_FILE,
        {{ cookiecutter.__handler_class }}(downloader, uploader),
        name=ROUTE_NAME,
    )
    return router
