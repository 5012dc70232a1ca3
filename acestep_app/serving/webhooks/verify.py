"""Verify a fal-style webhook delivery: Ed25519 signature, checked against a JWKS, plus freshness.

Standalone on purpose: it needs only the standard library and ``cryptography``, so a receiver can
import it from ``acestep_app`` or copy this one file. Fetch the key set from the sender's
``/.well-known/jwks.json`` (cache it for at most 24 hours) and call :func:`verify` with the headers
and the raw request body (the bytes as received, never re-serialised JSON)::

    jwks = httpx.get("https://<server>/.well-known/jwks.json").json()
    if not verify(request.headers, await request.body(), jwks):
        return Response(status_code=401)

The signed message is the UTF-8 of ``request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" +
hex(sha256(body))``, taken from the ``X-Fal-Webhook-*`` headers; the signature header is the 128
hex digits of the 64-byte Ed25519 signature. :func:`verify` never raises on what a sender controls:
anything malformed (a 400-digit timestamp, a signature of the wrong length) is simply not valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

REQUEST_ID_HEADER = "X-Fal-Webhook-Request-Id"
USER_ID_HEADER = "X-Fal-Webhook-User-Id"
TIMESTAMP_HEADER = "X-Fal-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Fal-Webhook-Signature"
DEFAULT_MAX_AGE_S = 300.0
SIGNATURE_HEX = re.compile(r"[0-9a-fA-F]{128}")  # an Ed25519 signature: 64 bytes
TIMESTAMP = re.compile(r"[0-9]{1,12}")  # Unix seconds (12 digits reach the year 33658)


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes a delivery's signature covers."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode("utf-8")


def public_keys(keys: Mapping[str, Any] | Iterable[Any]) -> list[Ed25519PublicKey]:
    """Ed25519 public keys from a JWKS (``{"keys": [...]}``), a list of JWKs, raw 32-byte keys or key objects.

    JWKs that are not ``OKP``/``Ed25519`` are skipped, so a mixed key set works.
    """
    if isinstance(keys, Mapping):
        keys = keys.get("keys", [])
    found = []
    for key in keys:
        try:
            if isinstance(key, Ed25519PublicKey):
                found.append(key)
            elif isinstance(key, bytes):
                found.append(Ed25519PublicKey.from_public_bytes(key))
            elif isinstance(key, Mapping) and key.get("kty") == "OKP" and key.get("crv") == "Ed25519" and "x" in key:
                found.append(Ed25519PublicKey.from_public_bytes(_b64url_decode(key["x"])))
        except (TypeError, ValueError, binascii.Error):  # a malformed key is skipped, like a foreign one
            continue
    return found


def verify(headers: Mapping[str, str], body: bytes, keys: Mapping[str, Any] | Iterable[Any], *,
           max_age_s: float = DEFAULT_MAX_AGE_S, now: float | None = None) -> bool:
    """True when the delivery is signed by one of ``keys`` and its timestamp is within ``max_age_s`` of now.

    Args:
        headers: the request headers (any mapping; names are matched case-insensitively).
        body: the raw request body.
        keys: a JWKS dict, a list of JWKs, raw 32-byte public keys or ``Ed25519PublicKey`` objects.
        max_age_s: the largest accepted ``|now - timestamp|`` in seconds (fal uses 300).
        now: the current Unix time (default ``time.time()``).
    """
    try:
        lowered = {str(name).lower(): value for name, value in headers.items()}
        values = [lowered.get(name.lower()) for name in (REQUEST_ID_HEADER, USER_ID_HEADER, TIMESTAMP_HEADER,
                                                         SIGNATURE_HEADER)]
        if any(not isinstance(value, str) or not value for value in values):
            return False
        body = bytes(body)
        request_id, user_id, timestamp, signature_hex = values
        if not (TIMESTAMP.fullmatch(timestamp) and SIGNATURE_HEX.fullmatch(signature_hex)):
            return False
        if abs((time.time() if now is None else now) - int(timestamp)) > max_age_s:
            return False
        message = signed_message(request_id, user_id, timestamp, body)
        signature = bytes.fromhex(signature_hex)
        candidates = public_keys(keys)
    except (TypeError, ValueError, AttributeError, OverflowError):  # UnicodeError is a ValueError
        return False
    for key in candidates:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
