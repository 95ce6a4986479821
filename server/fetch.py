"""Bring a `*_url` input onto local disk: http(s) URLs, base64 data URIs, and this server's own files.

Downloads are guarded against SSRF the way fal's toolkit does it (serving-notes §3.2):
- only http and https; the host is resolved once and refused if any of its addresses is not public
  (loopback, private, link-local/metadata, CGNAT, multicast, reserved, and the same hidden inside
  IPv4-mapped, NAT64 or 6to4 IPv6 addresses), unless the operator allowlisted it;
- the connection goes to the vetted address (Host header and TLS SNI keep the hostname), so a DNS answer
  that changes between check and connect cannot redirect us;
- redirects are followed by hand, at most MAX_REDIRECTS, each hop checked again; credentials are dropped
  when a hop changes origin; proxy environment variables are ignored;
- the size cap is checked against Content-Length and again while streaming into a temp file, which is
  renamed into place only when complete.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from server.errors import InputError
from server.filestore import FileStore
from server.settings import env_list

log = logging.getLogger("vace.fetch")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
DEFAULT_TOTAL_TIMEOUT_S = 1800.0  # a slow trickle must not hold a worker forever
_REDIRECTS = {301, 302, 303, 307, 308}
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
NOT_ALLOWED = "the address is not allowed (private, local or reserved network)"


class AddressNotAllowed(Exception):
    """A URL whose host is, or resolves to, an address this server must not reach."""


@dataclass(frozen=True)
class Target:
    """One vetted hop: where to connect, and the names the peer must see."""

    url: str  # as given (hostname form)
    connect_url: str  # the same URL with the vetted IP in place of the hostname
    host_header: str
    sni_hostname: str | None  # None for plain http or when the host is an IP literal
    origin: tuple[str, str, int]

    def build_request(self, client: httpx.Client, method: str, headers: dict[str, str],
                      content: bytes | None = None) -> httpx.Request:
        """A request to the vetted address that still names the host (Host header, TLS SNI)."""
        extensions = {"sni_hostname": self.sni_hostname} if self.sni_hostname else {}
        return client.build_request(method, self.connect_url, content=content, extensions=extensions,
                                    headers={**headers, "Host": self.host_header})


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses, looking inside IPv6 forms that embed IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64[0]:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64[1] or ip.teredo is not None:
            return False  # local-use NAT64 and Teredo: where they lead cannot be judged from here
        if ip.sixtofour is not None:
            return is_public_address(ip.sixtofour)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


class AddressPolicy:
    """Which hosts this server may reach: public addresses, plus the operator's allowlist (hostnames or
    CIDRs). Input downloads (Fetcher) and webhook deliveries (server/webhooks.py) share it."""

    @classmethod
    def for_operator(cls, allow_hosts: Sequence[str] | None) -> AddressPolicy:
        """The operator's allowlist; None reads the environment variable Settings reads, so a component
        built without the list (an older caller) still agrees with the server's configuration."""
        return cls(env_list("VACE_FETCH_ALLOW_HOSTS") if allow_hosts is None else allow_hosts)

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            entry = entry.strip().lower().rstrip(".")
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry)

    def address_allowed(self, ip: IPAddress) -> bool:
        return is_public_address(ip) or any(ip.version == net.version and ip in net for net in self.networks)

    def resolve(self, host: str, port: int) -> IPAddress:
        """The address to connect to; AddressNotAllowed if ANY address of the host is off limits."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise LookupError(host) from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise LookupError(host)
        if host.lower().rstrip(".") in self.hosts:
            return addresses[0]
        refused = [ip for ip in addresses if not self.address_allowed(ip)]
        if refused:
            raise AddressNotAllowed(f"{host} ({refused[0]}): {NOT_ALLOWED}")
        return addresses[0]

    def target(self, url: str) -> Target:
        try:
            parts = urllib.parse.urlsplit(url)
            explicit_port = parts.port  # ValueError when out of range or not a number
        except ValueError as exc:
            raise AddressNotAllowed(f"{url[:200]}: not a valid URL ({exc})") from exc
        scheme = parts.scheme.lower()
        host = parts.hostname
        if scheme not in ("http", "https") or not host:
            raise AddressNotAllowed(f"{url[:200]}: not an http(s) URL with a host")
        port = explicit_port or (443 if scheme == "https" else 80)
        ip = self.resolve(host, port)
        literal = _is_ip_literal(host)
        ip_text = f"[{ip}]" if ip.version == 6 else str(ip)
        default_port = port == (443 if scheme == "https" else 80)
        host_text = f"[{host}]" if ":" in host else host
        host_header = host_text if default_port else f"{host_text}:{port}"
        connect = parts._replace(scheme=scheme, netloc=f"{ip_text}:{port}")
        return Target(url, urllib.parse.urlunsplit(connect), host_header,
                      host if scheme == "https" and not literal else None, (scheme, host.lower(), port))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def strip_credentials(headers: dict[str, str]) -> dict[str, str]:
    """What may follow a redirect to another origin."""
    return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}


class Fetcher:
    def __init__(self, files: FileStore, work_dir: Path, max_bytes: int, timeout_s: float,
                 allow_hosts: Sequence[str] | None = None,
                 total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S) -> None:
        self.files = files
        self.work_dir = work_dir
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.total_timeout_s = total_timeout_s
        self.policy = AddressPolicy.for_operator(allow_hosts)
        if any(os.environ.get(name) for name in _PROXY_VARS):
            log.warning("proxy environment variables are ignored for input downloads")

    def fetch(self, url: str, field: str, dest_dir: Path) -> Path:
        """Return a local path holding the bytes behind `url`; InputError (422) when that is impossible."""
        dest_dir.mkdir(parents=True, exist_ok=True)
        if url.startswith("data:"):
            return self._write(dest_dir, field, _decode_data_uri(url, field, self.max_bytes))
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc:
            raise InputError(field, f"{field} must be an http(s) URL or a data URI", "file_download_error")
        own = self.files.resolve_url_path(urllib.parse.unquote(parsed.path))
        if own is not None:
            return own
        return self._download(url, field, dest_dir)

    def _download(self, url: str, field: str, dest_dir: Path, headers: dict[str, str] | None = None) -> Path:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{field}-")
        deadline = time.monotonic() + self.total_timeout_s
        try:
            client = httpx.Client(timeout=self.timeout_s, trust_env=False, verify=tls_verify(),
                                  follow_redirects=False)
            with os.fdopen(fd, "wb") as out, client:
                self._stream_into(client, url, field, dict(headers or {}), out, deadline)
            final = dest_dir / field
            os.replace(tmp, final)
            return final
        except AddressNotAllowed as exc:
            raise _download_error(field, NOT_ALLOWED) from exc
        except LookupError as exc:
            raise _download_error(field, "the host name could not be resolved") from exc
        except httpx.TimeoutException as exc:
            raise _download_error(field, "the download timed out") from exc
        except httpx.HTTPError as exc:
            raise _download_error(field, f"the download failed ({type(exc).__name__})") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _stream_into(self, client: httpx.Client, url: str, field: str, headers: dict[str, str],
                     out: BinaryIO, deadline: float) -> None:
        target = self.policy.target(url)
        for _hop in range(MAX_REDIRECTS + 1):
            response = client.send(target.build_request(client, "GET", headers), stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    next_target = self.policy.target(urllib.parse.urljoin(target.url,
                                                                          response.headers["location"]))
                    if next_target.origin != target.origin:
                        headers = strip_credentials(headers)
                    target = next_target
                    continue
                if response.status_code != 200:
                    raise _download_error(field, f"could not download {field}: HTTP {response.status_code}")
                self._copy_capped(response, field, out, deadline)
                return
            finally:
                response.close()
        raise _download_error(field, f"could not download {field}: more than {MAX_REDIRECTS} redirects")

    def _copy_capped(self, response: httpx.Response, field: str, out: BinaryIO, deadline: float) -> None:
        try:
            declared = int(response.headers.get("content-length") or 0)
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            raise _too_large(field, self.max_bytes)
        size = 0
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
            if size > self.max_bytes:
                raise _too_large(field, self.max_bytes)
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total download time exceeded")
            out.write(chunk)

    def _write(self, dest_dir: Path, field: str, data: bytes) -> Path:
        path = dest_dir / field
        path.write_bytes(data)
        return path


def tls_verify() -> ssl.SSLContext | bool:
    """trust_env=False drops proxies but also SSL_CERT_FILE: keep honouring an operator's own CA bundle."""
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else True


def _download_error(field: str, reason: str) -> InputError:
    message = reason if reason.startswith("could not") else f"could not download {field}: {reason}"
    return InputError(field, message, "file_download_error")


def _decode_data_uri(url: str, field: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise InputError(field, f"{field} is not a valid data URI (no comma)", "file_download_error")
    # base64 inflates by 4/3: reject before decoding anything huge.
    if len(payload) * 3 // 4 > max_bytes:
        raise _too_large(field, max_bytes)
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(field, f"{field} has invalid base64 data", "file_download_error") from exc
    return urllib.parse.unquote_to_bytes(payload)


def _too_large(field: str, max_bytes: int) -> InputError:
    return InputError(field, f"{field} is larger than the {max_bytes} byte limit", "file_too_large",
                      {"max_size": max_bytes})
