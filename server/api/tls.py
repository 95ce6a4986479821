"""A self-signed certificate for `vace serve --ssl-self-signed`.

fal-client builds only https:// URLs from FAL_RUN_HOST, so serving TLS lets it talk to this server with
environment variables alone (docs/fal-protocol.md §6.1 Option A); clients trust the cert via SSL_CERT_FILE.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

VALID_DAYS = 825  # the longest validity macOS/iOS accept for TLS server certificates


def ensure_self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """(cert, key) PEM paths under `folder`, created on first use for localhost, 127.0.0.1 and `host`."""
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # not a hard dependency of the server
        raise SystemExit("--ssl-self-signed needs `cryptography`: pip install cryptography") from exc

    key = ec.generate_private_key(ec.SECP256R1())
    loopback = ipaddress.ip_address("127.0.0.1")
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(loopback)]
    if host not in ("localhost", "127.0.0.1", "0.0.0.0", "::"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vace-server self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # A CA flag so the file works directly as SSL_CERT_FILE (its own trust anchor).
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
