"""SSRF-safe downloads (server/outbound.py): address rules, pinning, redirects, size caps, allowlist.

Traffic stays on loopback: names like `public.test` are mapped to 127.0.0.1 by a fake resolver, and a guard
fails the test if anything tries to open a connection to a non-loopback address.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from server.api.tls import ensure_self_signed
from server.contract.errors import InputError
from server.files.local import LocalFileStore
from server.files.store import FileStore
from server.outbound import NOT_ALLOWED, AddressPolicy, is_public_address
from server.worker.fetch import MAX_REDIRECTS, Fetcher

BODY = b"0123456789" * 200  # 2000 bytes

_real_getaddrinfo = socket.getaddrinfo
_real_create_connection = socket.create_connection


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A safety net: a bug in the fetcher must fail the test, never send a packet off this machine."""

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"test tried to connect to {address[0]}")
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    # Downloads connect through server/worker/watched_http.py (non-blocking connect_ex): guard that too.
    real_connect_ex = socket.socket.connect_ex

    def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"test tried to connect to {address[0]}")
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


class FakeDns:
    """socket.getaddrinfo with some names mapped to fixed addresses; counts lookups per name."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: dict[str, list[list[str]]] = {}
        self.calls: dict[str, int] = {}
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def add(self, name: str, *answers: list[str]) -> None:
        """Each call answers with the next list of addresses (the last one repeats)."""
        self.names[name] = list(answers)

    def __call__(self, host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.names:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        count = self.calls.get(host, 0)
        self.calls[host] = count + 1
        answers = self.names[host]
        result = []
        for addr in answers[min(count, len(answers) - 1)]:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sockaddr = (addr, int(port or 0), 0, 0) if family == socket.AF_INET6 else (addr, int(port or 0))
            result.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return result


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    return FakeDns(monkeypatch)


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Site:
    """A tiny loopback HTTP server: path -> handler; records the headers of every request."""

    def __init__(self, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        site = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                site.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                site.routes.get(self.path, _not_found)(self)

            def log_message(self, *args: Any) -> None:
                pass

        server_class = http.server.ThreadingHTTPServer
        if ":" in host:
            server_class = type("V6Server", (http.server.ThreadingHTTPServer,), {"address_family":
                                                                                 socket.AF_INET6})
        self.httpd = server_class((host, 0), _Handler)
        self.port = self.httpd.server_address[1]
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _not_found(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(404)
    h.send_header("Content-Length", "0")
    h.end_headers()


def body(data: bytes = BODY, *, declared: bool = True) -> Handler:
    def handler(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        if declared:
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        # No Content-Length: only the count while streaming can stop it.
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(data), 500):
            piece = data[i:i + 500]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        h.wfile.write(b"0\r\n\r\n")
    return handler


def redirect(location: str, code: int = 302) -> Handler:
    def handler(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return handler


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.close()


@pytest.fixture
def files(tmp_path: Path) -> FileStore:
    return LocalFileStore(tmp_path / "files")


def make_fetcher(files: FileStore, tmp_path: Path, allow: tuple[str, ...] = (), max_bytes: int = 10_000,
                 ) -> Fetcher:
    return Fetcher(files, tmp_path / "work", max_bytes=max_bytes, timeout_s=5.0, allow_hosts=allow)


def refused(fetcher: Fetcher, url: str, dest: Path) -> InputError:
    with pytest.raises(InputError) as info:
        fetcher.fetch(url, "video_url", dest)
    assert info.value.error_type == "file_download_error"
    assert info.value.field == "video_url"
    return info.value


# -- the address rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "10.0.0.5", "172.16.0.1", "192.168.1.1", "169.254.169.254", "fe80::1",
    "100.64.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "ff0e::1", "240.0.0.1", "255.255.255.255",
    "192.0.2.1", "fc00::1", "::ffff:169.254.169.254", "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe",
    "64:ff9b::10.0.0.1", "64:ff9b:1::1", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
])
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::8.8.8.8",
                                     "2002:808:808::1", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_allowlist_takes_hostnames_and_cidrs() -> None:
    policy = AddressPolicy(["10.1.0.0/16", "Media.Internal.", "::1"])
    assert policy.address_allowed(ipaddress.ip_address("10.1.2.3"))
    assert not policy.address_allowed(ipaddress.ip_address("10.2.0.1"))
    assert policy.address_allowed(ipaddress.ip_address("::1"))
    assert "media.internal" in policy.hosts


# -- refusals before any connection -----------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/video.mp4",
    "http://[::1]:{port}/video.mp4",
    "http://localhost:{port}/video.mp4",
    "http://2130706433:{port}/video.mp4",  # 127.0.0.1 as one integer
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "https://127.0.0.1:{port}/video.mp4",
])
def test_local_and_metadata_addresses_are_refused(url: str, site: Site, files: FileStore,
                                                  tmp_path: Path) -> None:
    site.routes["/video.mp4"] = body()
    error = refused(make_fetcher(files, tmp_path), url.format(port=site.port), tmp_path / "in")
    assert NOT_ALLOWED in error.message
    assert site.seen == []  # refused before connecting


def test_hostname_resolving_to_private_address_is_refused(dns: FakeDns, files: FileStore,
                                                          tmp_path: Path) -> None:
    dns.add("videos.example.com", ["10.0.0.5"])
    error = refused(make_fetcher(files, tmp_path), "https://videos.example.com/a.mp4", tmp_path / "in")
    assert NOT_ALLOWED in error.message
    assert "10.0.0.5" not in error.message  # the caller learns nothing about our network


def test_any_private_answer_among_public_ones_is_refused(dns: FakeDns, files: FileStore,
                                                         tmp_path: Path) -> None:
    dns.add("mixed.example.com", ["93.184.215.14", "169.254.169.254"])
    refused(make_fetcher(files, tmp_path), "https://mixed.example.com/a.mp4", tmp_path / "in")


@pytest.mark.parametrize("url", ["ftp://example.com/a.mp4", "file:///etc/passwd", "gopher://example.com/"])
def test_other_schemes_are_refused(url: str, files: FileStore, tmp_path: Path) -> None:
    refused(make_fetcher(files, tmp_path), url, tmp_path / "in")


def test_unresolvable_host_is_a_download_error(dns: FakeDns, files: FileStore, tmp_path: Path) -> None:
    error = refused(make_fetcher(files, tmp_path), "http://no-such-host.invalid/a.mp4", tmp_path / "in")
    assert "resolved" in error.message


# -- allowlist, pinning ------------------------------------------------------------------------------------

def test_allowlist_lets_loopback_through(site: Site, files: FileStore, tmp_path: Path) -> None:
    site.routes["/v.mp4"] = body()
    path = make_fetcher(files, tmp_path, allow=("127.0.0.1",)).fetch(
        f"http://127.0.0.1:{site.port}/v.mp4", "video_url", tmp_path / "in")
    assert path.read_bytes() == BODY


def test_allowlisted_ipv6_loopback(files: FileStore, tmp_path: Path) -> None:
    try:
        v6 = Site("::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        v6.routes["/v.mp4"] = body()
        path = make_fetcher(files, tmp_path, allow=("::1/128",)).fetch(
            f"http://[::1]:{v6.port}/v.mp4", "video_url", tmp_path / "in")
        assert path.read_bytes() == BODY
    finally:
        v6.close()


def test_connection_is_pinned_to_the_vetted_address(dns: FakeDns, site: Site, files: FileStore,
                                                    tmp_path: Path) -> None:
    # DNS rebinding: the first answer passes the check, later answers point elsewhere (127.0.0.2, where
    # nothing listens, so a second lookup would make the download fail). The fetcher must look up once.
    dns.add("media.test", ["127.0.0.1"], ["127.0.0.2"])
    site.routes["/v.mp4"] = body()
    fetcher = make_fetcher(files, tmp_path, allow=("127.0.0.1/32",))
    path = fetcher.fetch(f"http://media.test:{site.port}/v.mp4", "video_url", tmp_path / "in")
    assert path.read_bytes() == BODY
    assert dns.calls["media.test"] == 1
    assert site.seen[0][1]["host"] == f"media.test:{site.port}"  # the origin server still sees its name


def test_https_is_pinned_and_verified_against_the_hostname(monkeypatch: pytest.MonkeyPatch, dns: FakeDns,
                                                          files: FileStore, tmp_path: Path) -> None:
    # The certificate names media.test (and 127.0.0.1). We connect to 127.0.0.1, so a check against the
    # address would accept other.test too; a check against the hostname (SNI) must refuse it.
    cert, key = ensure_self_signed(tmp_path / "tls", "media.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    dns.add("media.test", ["127.0.0.1"])
    dns.add("other.test", ["127.0.0.1"])
    tls_site = Site(tls=(cert, key))
    try:
        tls_site.routes["/v.mp4"] = body()
        fetcher = make_fetcher(files, tmp_path, allow=("127.0.0.1",))
        path = fetcher.fetch(f"https://media.test:{tls_site.port}/v.mp4", "video_url", tmp_path / "in")
        assert path.read_bytes() == BODY
        assert tls_site.seen[0][1]["host"] == f"media.test:{tls_site.port}"
        error = refused(fetcher, f"https://other.test:{tls_site.port}/v.mp4", tmp_path / "in2")
        assert "ConnectError" in error.message
    finally:
        tls_site.close()


def test_proxy_environment_is_ignored(monkeypatch: pytest.MonkeyPatch, site: Site, files: FileStore,
                                      tmp_path: Path) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    site.routes["/v.mp4"] = body()
    path = make_fetcher(files, tmp_path, allow=("127.0.0.1",)).fetch(
        f"http://127.0.0.1:{site.port}/v.mp4", "video_url", tmp_path / "in")
    assert path.read_bytes() == BODY


def test_own_file_urls_are_read_from_disk_without_network(files: FileStore, tmp_path: Path) -> None:
    stored = files.reserve("clip.mp4")
    with files.writer(stored) as out:
        out.write(BODY)
    url = "http://127.0.0.1:9" + files.url(stored)  # nothing listens there, and loopback is refused
    assert make_fetcher(files, tmp_path).fetch(url, "video_url", tmp_path / "in") == files.local_copy(stored)


def test_data_uri_still_works(files: FileStore, tmp_path: Path) -> None:
    fetcher = make_fetcher(files, tmp_path)
    path = fetcher.fetch("data:text/plain;base64,aGVsbG8=", "video_url", tmp_path / "in")
    assert path.read_bytes() == b"hello"


# -- redirects ---------------------------------------------------------------------------------------------

def test_redirect_to_loopback_is_refused(dns: FakeDns, site: Site, files: FileStore, tmp_path: Path) -> None:
    # Every real server in this test runs on loopback, so the first hop must count as allowed: its *name*
    # `public.test` is allowlisted (and mapped to 127.0.0.1 by the fake resolver). The redirect target is
    # the bare address 127.0.0.1, which is not allowlisted, so that hop must be refused before connecting.
    dns.add("public.test", ["127.0.0.1"])
    site.routes["/start"] = redirect(f"http://127.0.0.1:{site.port}/secret")
    site.routes["/secret"] = body(b"internal data")
    fetcher = make_fetcher(files, tmp_path, allow=("public.test",))
    error = refused(fetcher, f"http://public.test:{site.port}/start", tmp_path / "in")
    assert NOT_ALLOWED in error.message
    assert [path for path, _ in site.seen] == ["/start"]


def test_redirect_to_hostname_with_private_address_is_refused(dns: FakeDns, site: Site, files: FileStore,
                                                              tmp_path: Path) -> None:
    dns.add("public.test", ["127.0.0.1"])  # allowlisted by name, as above
    dns.add("metadata.internal", ["169.254.169.254"])
    site.routes["/start"] = redirect("http://metadata.internal/latest/meta-data/", code=307)
    error = refused(make_fetcher(files, tmp_path, allow=("public.test",)), f"http://public.test:{site.port}/start",
                    tmp_path / "in")
    assert NOT_ALLOWED in error.message


def test_allowed_redirects_are_followed(site: Site, files: FileStore, tmp_path: Path) -> None:
    site.routes["/a"] = redirect("/b", code=301)
    site.routes["/b"] = redirect(f"http://127.0.0.1:{site.port}/v.mp4", code=308)
    site.routes["/v.mp4"] = body()
    path = make_fetcher(files, tmp_path, allow=("127.0.0.1",)).fetch(
        f"http://127.0.0.1:{site.port}/a", "video_url", tmp_path / "in")
    assert path.read_bytes() == BODY


def test_redirect_loops_stop(site: Site, files: FileStore, tmp_path: Path) -> None:
    site.routes["/loop"] = redirect("/loop")
    error = refused(make_fetcher(files, tmp_path, allow=("127.0.0.1",)), f"http://127.0.0.1:{site.port}/loop",
                    tmp_path / "in")
    assert "redirects" in error.message
    assert len(site.seen) == MAX_REDIRECTS + 1


def test_credentials_are_dropped_on_cross_origin_redirects(site: Site, files: FileStore,
                                                           tmp_path: Path) -> None:
    other = Site()
    try:
        site.routes["/same"] = redirect("/cross")
        # Another port is another origin.
        site.routes["/cross"] = redirect(f"http://127.0.0.1:{other.port}/v.mp4")
        other.routes["/v.mp4"] = body()
        fetcher = make_fetcher(files, tmp_path, allow=("127.0.0.1",))
        secrets = {"Authorization": "Key secret", "Cookie": "session=1", "Proxy-Authorization": "Basic x"}
        dest = tmp_path / "in"
        dest.mkdir()
        fetcher._download(f"http://127.0.0.1:{site.port}/same", "video_url", dest, headers=secrets)
        assert site.seen[1][1]["authorization"] == "Key secret"  # same origin: kept
        leaked = set(other.seen[0][1]) & {"authorization", "cookie", "proxy-authorization"}
        assert leaked == set()
    finally:
        other.close()


# -- size caps and errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_size_cap(declared: bool, site: Site, files: FileStore, tmp_path: Path) -> None:
    site.routes["/big"] = body(BODY, declared=declared)
    fetcher = make_fetcher(files, tmp_path, allow=("127.0.0.1",), max_bytes=len(BODY) - 1)
    dest = tmp_path / "in"
    with pytest.raises(InputError) as info:
        fetcher.fetch(f"http://127.0.0.1:{site.port}/big", "video_url", dest)
    assert info.value.error_type == "file_too_large"
    assert list(dest.iterdir()) == []  # no temp file, no partial file


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_exactly_the_cap_is_accepted(declared: bool, site: Site, files: FileStore, tmp_path: Path) -> None:
    site.routes["/ok"] = body(BODY, declared=declared)
    fetcher = make_fetcher(files, tmp_path, allow=("127.0.0.1",), max_bytes=len(BODY))
    path = fetcher.fetch(f"http://127.0.0.1:{site.port}/ok", "video_url", tmp_path / "in")
    assert path.read_bytes() == BODY
    assert [p.name for p in path.parent.iterdir()] == ["video_url"]


def test_http_error_status_is_a_download_error(site: Site, files: FileStore, tmp_path: Path) -> None:
    error = refused(make_fetcher(files, tmp_path, allow=("127.0.0.1",)), f"http://127.0.0.1:{site.port}/none",
                    tmp_path / "in")
    assert "HTTP 404" in error.message
