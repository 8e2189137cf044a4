"""The endpoints and auth of upstream pacifica-downloader/pacifica-uploader objects.

Upstream routers build ``RemoteDownloaderRunner(Downloader(cart_api_url=…,
auth=…))`` and ``RemoteUploaderRunner(Uploader(upload_url=…, status_url=…,
auth=…))``. The runners read what they need from such objects here,
duck-typed on their attributes, so neither package has to be installed.
``auth`` is a dict of ``requests`` keyword arguments (``auth``, ``cert``,
``verify``, ``headers``), as pacifica-cli's ``generate_requests_auth`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pacifica.dispatcher.errors import ConfigurationError


@dataclass(frozen=True)
class Endpoint:
    """Where a runner sends its requests, and the ``requests`` options they carry."""

    url: str
    status_url: str | None = None
    requests_options: dict[str, Any] = field(default_factory=dict)


def _attribute(obj: Any, *names: str) -> Any:
    return next((getattr(obj, n) for n in names if getattr(obj, n, None) is not None), None)


def _options(auth: Any, owner: Any) -> dict[str, Any]:
    if auth is None:
        return {}
    if not isinstance(auth, dict):
        raise ConfigurationError(f"{type(owner).__name__}.auth is not a dict of requests options")
    return dict(auth)


def downloader_endpoint(downloader: Any) -> Endpoint:
    """The cart URL and auth of a pacifica-downloader ``Downloader`` (or its ``CartAPI``).

    Raises:
        ConfigurationError: the object has no cart URL, or its auth is not a dict.
    """
    cart_api = getattr(downloader, "cart_api", downloader)
    url = _attribute(cart_api, "cart_api_url", "_cart_api_url")
    if not isinstance(url, str):
        raise ConfigurationError(
            f"{type(downloader).__name__} has no cart_api_url: pass a URL or a pacifica Downloader"
        )
    return Endpoint(url, requests_options=_options(_attribute(cart_api, "auth", "_auth"), cart_api))


def uploader_endpoint(uploader: Any) -> Endpoint:
    """The upload URL, status URL and auth of a pacifica-uploader ``Uploader``.

    Raises:
        ConfigurationError: the object lacks either URL, or its auth is not a dict.
    """
    upload = _attribute(uploader, "upload_url", "_upload_url")
    status = _attribute(uploader, "status_url", "_status_url")
    if not isinstance(upload, str) or not isinstance(status, str):
        raise ConfigurationError(
            f"{type(uploader).__name__} has no upload_url/status_url: "
            "pass an ingest URL or a pacifica Uploader"
        )
    auth = _attribute(uploader, "auth", "_auth")
    return Endpoint(upload, status, _options(auth, uploader))
