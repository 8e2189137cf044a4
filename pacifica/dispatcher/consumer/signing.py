"""Verifying the producer's signed deliveries at the consumer's receiver.

The producer signs as Standard Webhooks (``subscriptions/delivery.sign``):
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` =
``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
base64-decoded part of the ``whsec_…`` secret. A ``DeliveryVerifier`` is the
receiver's ``verify`` hook: an unsigned, forged or stale request raises
``InvalidSignatureError`` (401) before anything is parsed or stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pacifica.dispatcher.errors import InvalidSignatureError
from pacifica.dispatcher.subscriptions.registry import SECRET_PREFIX, new_secret

TOLERANCE = 300.0  # seconds a signature's timestamp may be away from now (replays)


def expected_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> bytes:
    """The base64 HMAC-SHA256 a delivery with these values must carry.

    Raises:
        ValueError: the secret is not ``whsec_`` + base64.
    """
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("the signing secret is not whsec_ + base64") from exc
    signed = f"{message_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


@dataclass
class DeliveryVerifier:
    """Checks each delivery's signature against the consumer's secret.

    ``require_signature`` is False only for a producer that does not sign (an
    upstream pacifica-notifications), which the command warns about.
    """

    secret: str = field(default_factory=new_secret)
    require_signature: bool = True
    tolerance: float = TOLERANCE
    clock: Callable[[], float] = time.time

    def __call__(self, headers: Mapping[str, str], body: bytes) -> None:
        """Return quietly for a valid delivery.

        Raises:
            InvalidSignatureError: unsigned (when signatures are required), forged or stale.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        message_id = lower.get("webhook-id")
        stamp = lower.get("webhook-timestamp")
        signatures = lower.get("webhook-signature")
        if not (message_id and stamp and signatures):
            if self.require_signature:
                raise InvalidSignatureError("the delivery is not signed (webhook-* headers)")
            return
        try:
            age = abs(self.clock() - int(stamp))
        except ValueError:
            raise InvalidSignatureError("webhook-timestamp is not a number") from None
        if age > self.tolerance:
            raise InvalidSignatureError("webhook-timestamp is too far from now")
        expected = expected_signature(self.secret, message_id, stamp, body)
        offered = [s.split(",", 1)[1] for s in signatures.split() if s.startswith("v1,")]
        if not any(hmac.compare_digest(expected, s.encode()) for s in offered):
            raise InvalidSignatureError("webhook-signature does not verify")
