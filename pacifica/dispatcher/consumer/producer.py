"""The consumer's subscription at its producer: register (replacing a stale one), unregister.

``POST {producer}/eventmatch`` with the user header (``Http-Remote-User``)
and the producer's credentials, the consumer's JSONPath, its public
``/receive`` URL and a signing secret. This project's producer stores the
secret and signs every delivery; an upstream pacifica-notifications 0.5.2
does not know secrets: the request is made again without one and the
consumer accepts unsigned deliveries, with a warning.

A consumer is known at its producer by its subscription's name (derived from
its public URL), so a consumer started again after a crash finds the
subscription it left behind and replaces it: never two for one consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from pacifica.dispatcher.errors import ProducerError

NAME_PREFIX = "pacifica-notifications-consumer "


def subscription_name(target_url: str) -> str:
    """The name of the consumer's subscription (its identity at the producer)."""
    return (NAME_PREFIX + target_url)[:255]


@dataclass(frozen=True)
class Registration:
    """The consumer's subscription: its id, and whether the producer signs deliveries."""

    uuid: str
    signed: bool
    replaced: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Producer:
    """A producer's subscription API as one user sees it."""

    url: str
    user: str
    user_header: str = "Http-Remote-User"
    auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    verify_tls: bool | str = True
    timeout: float = 30.0

    def _request(self, method: str, path: str, **options: Any) -> requests.Response:
        headers = {**self.headers, self.user_header: self.user}
        url = self.url.rstrip("/") + path
        try:
            return requests.request(
                method,
                url,
                headers=headers,
                auth=self.auth,
                verify=self.verify_tls,
                timeout=self.timeout,
                **options,
            )
        except requests.RequestException as exc:
            raise ProducerError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc

    def _ok(self, response: requests.Response, what: str) -> requests.Response:
        if not response.ok:
            raise ProducerError(f"{what}: {response.status_code} {response.text[:500]}")
        return response

    def subscriptions(self) -> list[dict[str, Any]]:
        """The user's subscriptions.

        Raises:
            ProducerError: the producer refused or did not answer.
        """
        found = self._ok(self._request("GET", "/eventmatch"), "listing subscriptions").json()
        return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []

    def delete(self, uuid: str) -> None:
        """Delete one subscription; one already gone is fine.

        Raises:
            ProducerError: the producer refused or did not answer.
        """
        response = self._request("DELETE", f"/eventmatch/{uuid}")
        if response.status_code != 404:
            self._ok(response, f"deleting subscription {uuid}")

    def register(self, jsonpath: str, target_url: str, secret: str) -> Registration:
        """Replace the consumer's stale subscriptions by a new one asking for signed deliveries.

        Raises:
            ProducerError: the producer refused or did not answer.
        """
        name = subscription_name(target_url)
        stale = [
            str(s["uuid"])
            for s in self.subscriptions()
            if (s.get("name") == name or s.get("target_url") == target_url) and not s.get("deleted")
        ]
        for uuid in stale:
            self.delete(uuid)
        body: dict[str, Any] = {"name": name, "jsonpath": jsonpath, "target_url": target_url}
        response = self._request("POST", "/eventmatch", json={**body, "secret": secret})
        if response.status_code in (400, 422, 500):  # an upstream producer: no 'secret' field
            response = self._request("POST", "/eventmatch", json=body)
        created = self._ok(response, "creating the subscription").json()
        signed = bool(isinstance(created, dict) and created.get("secret"))
        return Registration(str(created["uuid"]), signed, stale)
