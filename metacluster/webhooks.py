"""Standard Webhooks signing and verification (https://www.standardwebhooks.com), stdlib only.

The service signs every webhook it sends with the `whsec_...` secret of the job's API
key; a receiver checks it with `verify`::

    from metacluster.webhooks import verify
    event = verify(request.body, request.headers, secret="whsec_...")  # raises on a bad one

Headers: ``webhook-id`` (the same on every retry of one message), ``webhook-timestamp``
(Unix seconds of this attempt) and ``webhook-signature``: space-separated ``v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one per secret in force (two right after a
rotation, so receivers can switch secrets without losing a message).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from metacluster.errors import InputError

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# Receivers refuse messages whose timestamp is further than this from their clock
# (replay protection); Standard Webhooks recommends five minutes.
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(InputError, code="invalid_webhook_signature", status=400):
    """A webhook whose headers, timestamp or signature do not check out."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    raw = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (ValueError, TypeError):
        raise WebhookVerificationError("webhook secret is not base64 after 'whsec_'") from None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}`` under `secret`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def sign_headers(
    secrets_in_force: Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per secret."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signature(s, msg_id, ts, body) for s in secrets_in_force),
    }


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The parsed event when one of the signatures matches `secret` and the timestamp
    is within `tolerance_s` of `now`; raises `WebhookVerificationError` otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    sigs = lower.get("webhook-signature")
    if not msg_id or not stamp or not sigs:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    clock = time.time() if now is None else now
    if abs(clock - ts) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp is {clock - ts:+.0f} s off (tolerance {tolerance_s:.0f} s): "
            "a replay or a wrong clock"
        )
    raw = body.encode() if isinstance(body, str) else bytes(body)
    expected = signature(secret, msg_id, ts, raw).split(",", 1)[1]
    for candidate in sigs.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(value, expected):
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                raise WebhookVerificationError("webhook body is not JSON") from None
            if not isinstance(event, dict):
                raise WebhookVerificationError("webhook body is not a JSON object")
            return event
    raise WebhookVerificationError("no webhook-signature matches the secret")


__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "new_secret",
    "sign_headers",
    "signature",
    "verify",
]
