"""Webhook signatures as fal makes them: Ed25519 over four lines, the key published as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.api.background.webhook_signing import (
    jwks,
    load_or_create_signing_key,
    public_keys,
    signature_headers,
    verify,
)
from tests.server.conftest import LiveServer


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_signature_is_ed25519_over_fals_four_lines(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "k.pem")
    body = b'{"status": "OK"}'
    headers = signature_headers(key, "req-1", body, timestamp=1_700_000_000)
    assert headers["X-Fal-Webhook-Request-Id"] == "req-1"
    assert headers["X-Fal-Webhook-Timestamp"] == "1700000000"
    # Checked independently of the module: the message as fal documents it, the key from the JWKS.
    message = f"req-1\n{headers['X-Fal-Webhook-User-Id']}\n1700000000\n{hashlib.sha256(body).hexdigest()}"
    (jwk,) = jwks(key.public_key())["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("OKP", "Ed25519", "EdDSA") and "=" not in jwk["x"]
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    assert len(raw) == 32
    public = Ed25519PublicKey.from_public_bytes(raw)
    signature = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    assert len(signature) == 64
    public.verify(signature, message.encode())  # raises if wrong
    with pytest.raises(InvalidSignature):
        public.verify(signature, message.replace("req-1", "req-2").encode())


def test_verify_rejects_tampering_other_keys_and_stale_timestamps(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "k.pem")
    keys = public_keys(jwks(key.public_key()))
    body = b"{}"
    fresh = lower(signature_headers(key, "r", body))
    assert verify(keys, fresh, body)
    assert not verify(keys, fresh, body + b" ")
    assert not verify(keys, {**fresh, "x-fal-webhook-request-id": "other"}, body)
    assert not verify([Ed25519PrivateKey.generate().public_key()], fresh, body)
    assert verify([Ed25519PrivateKey.generate().public_key(), *keys], fresh, body)  # any published key
    stale = lower(signature_headers(key, "r", body, timestamp=int(time.time()) - 301))
    assert not verify(keys, stale, body)
    assert not verify(keys, {**fresh, "x-fal-webhook-signature": "zz"}, body)
    assert not verify(keys, {k: v for k, v in fresh.items() if k != "x-fal-webhook-timestamp"}, body)


def test_key_is_created_once_owner_only_and_survives_restarts(tmp_path: Path) -> None:
    path = tmp_path / "data" / "webhook_ed25519.pem"
    first = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o077 == 0 and not path.with_suffix(".tmp").exists()
    assert jwks(load_or_create_signing_key(path).public_key()) == jwks(first.public_key())
    path.write_text("not a key")
    with pytest.raises(ValueError):
        load_or_create_signing_key(path)


def test_jwks_route_is_public_and_matches_the_key_file(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.base}/.well-known/jwks.json")
    assert response.status_code == 200
    key = load_or_create_signing_key(live_server.data_dir / "webhook_ed25519.pem")
    assert response.json() == jwks(key.public_key())
