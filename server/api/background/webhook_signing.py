"""Webhook signatures made the way fal makes them (docs/fal-protocol.md §3), with this server's own key.

Each delivery carries `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` (unix seconds) and `-Signature`:
the hex Ed25519 signature of

    "{request_id}\\n{user_id}\\n{timestamp}\\n{sha256 hex of the raw body}"

The public key is published as a JWKS (OKP / Ed25519) at `GET /.well-known/jwks.json`, so a receiver
written for fal only changes the JWKS URL it fetches. The private key is created once, owner-readable
only, in the data directory, and never leaves it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

JWKS_ROUTE = "/.well-known/jwks.json"
USER_ID = "self-hosted"
TOLERANCE_S = 300.0  # what fal's receivers allow between the timestamp and their clock


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The server's Ed25519 key (PKCS#8 PEM), created on first start with owner-only permissions."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)  # atomic: a crash never leaves half a key behind
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwks(public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The JWKS document; `kid` is derived from the key, so it changes only if the key file does."""
    raw = _raw(public_key)
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "use": "sig", "alg": "EdDSA",
                      "kid": _b64url(hashlib.sha256(raw).digest()[:12])}]}


def public_keys(document: Mapping[str, Any]) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document (other key types are skipped)."""
    keys = []
    for jwk in document.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "x" in jwk:
            x = jwk["x"]
            keys.append(Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))))
    return keys


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    return f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()


def signature_headers(key: Ed25519PrivateKey, request_id: str, body: bytes,
                      timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(signed_message(request_id, USER_ID, stamp, body)).hex()
    return {"X-Fal-Webhook-Request-Id": request_id, "X-Fal-Webhook-User-Id": USER_ID,
            "X-Fal-Webhook-Timestamp": stamp, "X-Fal-Webhook-Signature": signature}


def verify(keys: Iterable[Ed25519PublicKey], headers: Mapping[str, str], body: bytes, *,
           tolerance_s: float = TOLERANCE_S) -> bool:
    """What a receiver does with the JWKS keys; `headers` is keyed in lower case, as most frameworks give."""
    try:
        timestamp = headers["x-fal-webhook-timestamp"]
        if abs(time.time() - int(timestamp)) > tolerance_s:
            return False  # a replay, or a clock far off
        message = signed_message(headers["x-fal-webhook-request-id"], headers["x-fal-webhook-user-id"],
                                 timestamp, body)
        signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    except (KeyError, ValueError):
        return False
    for key in keys:
        try:
            key.verify(signature, message)
            return True
        except InvalidSignature:
            continue
    return False
