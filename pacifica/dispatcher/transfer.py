"""What the two remote runners (cartd downloads, ingest uploads) share: the HTTP request
with its timeout and auth options, and the wait for a remote job with growing intervals."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests

from pacifica.dispatcher.config import Settings
from pacifica.dispatcher.errors import TransferError, TransferTimeoutError

T = TypeVar("T")


class RemoteService:
    """How a runner talks to a Pacifica service: request options and timeouts, and polling.

    ``requests_options`` go to every request (auth, headers, verify);
    ``request_timeout`` bounds each request; a remote job is polled every
    ``poll_interval`` seconds, doubling up to ``max_poll_interval``, for up to
    ``default_timeout`` seconds unless the call gives its own timeout.
    """

    def __init__(
        self,
        *,
        requests_options: Mapping[str, Any] | None = None,
        request_timeout: float = 30.0,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        default_timeout: float = 180.0,
    ) -> None:
        self.requests_options = dict(requests_options or {})
        self.request_timeout = request_timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.default_timeout = default_timeout

    @staticmethod
    def options_from(settings: Settings) -> dict[str, Any]:
        """The keyword options for a runner from the settings (auth, request and transfer timeouts)."""
        return {
            "requests_options": settings.requests_options(),
            "request_timeout": settings.request_timeout,
            "default_timeout": settings.transfer_timeout,
        }

    def request(
        self,
        session: requests.Session,
        method: str,
        url: str,
        error: type[TransferError],
        **kwargs: Any,
    ) -> requests.Response:
        """One request with the service's options and timeout (headers merged, not replaced).

        Raises:
            TransferError: ``error``, when the request could not be made or answered.
        """
        options = {**self.requests_options, "timeout": self.request_timeout, **kwargs}
        options["headers"] = {
            **self.requests_options.get("headers", {}),
            **kwargs.get("headers", {}),
        }
        try:
            return session.request(method, url, **options)
        except requests.RequestException as exc:
            raise error(f"{method} {url} failed: {exc}") from exc

    def poll(
        self, check: Callable[[], T | None], timeout: float, waiting_for: Callable[[], str]
    ) -> T:
        """Call ``check`` until it returns something, waiting longer each time (up to the maximum).

        Raises:
            TransferTimeoutError: ``timeout`` seconds passed; ``waiting_for()`` says on what.
        """
        deadline = time.monotonic() + timeout
        interval = self.poll_interval
        while True:
            found = check()
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransferTimeoutError(f"{waiting_for()} after {timeout:g} s")
            time.sleep(min(interval, remaining))  # the remote job's polling interval
            interval = min(interval * 2, self.max_poll_interval)
