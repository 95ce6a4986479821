"""The SSRF policy for every connection this server opens to a caller-given URL: input downloads
(server/worker/fetch.py) and webhooks (server/api/background/webhooks.py).

Guarded the way fal's toolkit does it:
- only http and https; the host is resolved once and refused if any of its addresses is not public
  (loopback, private, link-local/metadata, CGNAT, multicast, reserved, and the same hidden inside
  IPv4-mapped, NAT64 or 6to4 IPv6 addresses), unless the operator allowlisted it;
- the connection goes to the vetted address (Host header and TLS SNI keep the hostname), so a DNS answer
  that changes between check and connect cannot redirect us;
- credentials are dropped when a redirect changes origin (`strip_credentials`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from server.settings import env_list

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
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

    def build_request(self, client: httpx.Client | httpx.AsyncClient, method: str, headers: dict[str, str],
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
    CIDRs). Input downloads (Fetcher) and webhook deliveries (server/api/background/webhooks.py) share it."""

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


def tls_verify() -> ssl.SSLContext | bool:
    """trust_env=False drops proxies but also SSL_CERT_FILE: keep honouring an operator's own CA bundle."""
    cafile = os.environ.get("SSL_CERT_FILE")
    return ssl.create_default_context(cafile=cafile) if cafile else True
