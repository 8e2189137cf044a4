"""The consumer's signature check and the helper module entry points import."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacifica.dispatcher.consumer import pacifica_notifications_consumer as helper
from pacifica.dispatcher.consumer.signing import DeliveryVerifier
from pacifica.dispatcher.consumer.upload import transaction_from
from pacifica.dispatcher.errors import InvalidSignatureError
from pacifica.dispatcher.subscriptions.delivery import sign

BODY = b'{"eventID": "1"}'


def signed_headers(secret: str, body: bytes = BODY, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(stamp),
        "Webhook-Signature": sign(secret, "msg_1", stamp, body),
    }


def test_a_delivery_the_producer_signed_verifies() -> None:
    verifier = DeliveryVerifier()
    verifier(signed_headers(verifier.secret), BODY)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "not signed"),
        ("forged", "does not verify"),
        ("other body", "does not verify"),
        ("stale", "too far from now"),
    ],
)
def test_unsigned_forged_and_stale_deliveries_are_refused(case: str, reason: str) -> None:
    verifier = DeliveryVerifier()
    headers = {
        "unsigned": {},
        "forged": signed_headers(DeliveryVerifier().secret),
        "other body": signed_headers(verifier.secret, b"{}"),
        "stale": signed_headers(verifier.secret, stamp=int(time.time()) - 3600),
    }[case]
    with pytest.raises(InvalidSignatureError, match=reason):
        verifier(headers, BODY)


def test_an_unsigning_producer_is_accepted_only_when_told() -> None:
    verifier = DeliveryVerifier(require_signature=False)
    verifier({}, BODY)
    with pytest.raises(InvalidSignatureError):  # a forged signature is still refused
        verifier(signed_headers(DeliveryVerifier().secret), BODY)


def test_download_resolves_with_the_notification_and_a_proposal_alias(tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    event = {"data": [{"destinationTable": "Transactions.project", "value": "1234a"}]}
    (tmp_path / "notification.json").write_text(json.dumps(event))
    got = helper.download(str(tmp_path)).get()
    assert {"destinationTable": "Transactions.proposal", "value": "1234a"} in got["data"]
    rejected = helper.download(str(tmp_path / "missing"))
    assert rejected.is_rejected
    rejected.catch(lambda exc: None)  # handled: the helper's exit check must not fire here


def test_upload_attributes_accept_the_reference_names() -> None:
    transaction = transaction_from(
        {"Transactions.proposal": "1234a", "Transactions.submitter": 10, "instrument": 54}
    )
    assert (transaction.project, transaction.submitter, transaction.instrument) == ("1234a", 10, 54)
    with pytest.raises(ValueError, match=r"Transactions\._id"):
        transaction_from({"Transactions._id": 1})


def test_an_unhandled_rejection_fails_the_entry_point(tmp_path: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(helper.__file__).parent)!r})\n"
        "from pacifica_notifications_consumer import download\n"
        "download(sys.argv[1]).then(lambda d: print('never'))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "unhandled promise rejection" in done.stderr
    assert "FileNotFoundError" in done.stderr
