"""Other clients' worst latency while the API is attacked (issue 11 items 3, 4 and 5).

Starts `vace serve --model tiny --workers 0` from a checkout (`--repo`, default this one, so the same
script measures an older commit too), then runs one attack while a probe client sends `GET /health` on a
new connection every 100 ms, and prints the probes' worst and median latency and failures:

- `header`: `--attackers` connections each stream one request header of `--header-mib` MiB;
- `slowloris`: `--connections` connections (from a second process) each send half a request line and then
  one byte every 5 s, reconnecting a second after the server closes one; the server gets `--nofile`
  descriptors (a common default is 1024; Docker's is far higher) so that the attack can exhaust them;
- `webhook`: no HTTP server; the checkout's WebhookDispatcher (its default 15 s timeout) delivers to four
  receivers that never answer and one that trickles its headers a byte every 0.2 s, then to a good one
  (completed last); prints how long the good one waited.

    python -m benchmarks.attack_http header [--attackers 4] [--header-mib 64] [--repo PATH]
    python -m benchmarks.attack_http slowloris [--connections 3000] [--nofile 2048] [--repo PATH]
    python -m benchmarks.attack_http webhook [--repo PATH]

The attacker, the probe and the server share the machine's cores: figures are pessimistic and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PROBE_EVERY_S = 0.1
PROBE_TIMEOUT_S = 60.0
RECONNECT_S = 1.0  # a slowloris attacker re-opens a connection the server closed after this long


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(repo: Path, nofile: int | None) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "server.cli", "serve", "--model", "tiny", "--workers", "0",
               "--data-dir", f"{tmp}/data", "--port", str(port), "--log-level", "error"]

        def limit() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        proc = subprocess.Popen(cmd, cwd=repo, env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=limit)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.2)
            yield port
        finally:
            proc.kill()
            proc.wait()


async def probe_once(port: int) -> float | None:
    """Seconds for one GET /health on a new connection, or None if it failed or took too long."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
    except (OSError, TimeoutError):
        return None
    return time.perf_counter() - started if answer.startswith(b"HTTP/1.1 ") else None


async def probe(port: int, stop: asyncio.Event, results: list[float | None]) -> None:
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        results.append(await probe_once(port))

    while not stop.is_set():
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(PROBE_EVERY_S)
    await asyncio.gather(*pending)


def report(name: str, results: list[float | None], extra: str = "") -> None:
    done = [r for r in results if r is not None]
    failed = len(results) - len(done)
    worst = f"{max(done) * 1000:.0f} ms" if done else "-"
    median = f"{statistics.median(done) * 1000:.1f} ms" if done else "-"
    print(f"{name}: {len(results)} probes, worst {worst}, median {median}, failed or over "
          f"{PROBE_TIMEOUT_S:.0f} s: {failed}{extra}", flush=True)


async def header_attack(port: int, attackers: int, mib: int) -> None:
    async def attack() -> float:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        with contextlib.suppress(OSError):
            for _ in range(mib * 16):
                writer.write(chunk)
                await writer.drain()
            writer.write(b"\r\n\r\n")
            await writer.drain()
        with contextlib.suppress(OSError):
            await reader.read()
        writer.close()
        return time.perf_counter() - started

    stop = asyncio.Event()
    results: list[float | None] = []
    probing = asyncio.create_task(probe(port, stop, results))
    await asyncio.sleep(1.0)  # a baseline before the attack
    answered = await asyncio.gather(*(attack() for _ in range(attackers)))
    await asyncio.sleep(1.0)
    stop.set()
    await probing
    report(f"header attack ({attackers} x {mib} MiB)", results,
           f"; attackers answered after {', '.join(f'{s:.2f}' for s in answered)} s")


def slowloris_attacker(port: int, connections: int, stop: multiprocessing.synchronize.Event) -> None:
    """In its own process, so the probe's figures are the server's, not this loop's."""
    async def hold() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /health HTTP/1.1\r\nX-")
                while not stop.is_set() and not reader.at_eof():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5):
                            await reader.read(1024)  # returns early when the server closes
                    writer.write(b"a")
                    await writer.drain()
                writer.close()
            except OSError:
                pass
            await asyncio.sleep(RECONNECT_S)

    async def run() -> None:
        holders = [asyncio.create_task(hold()) for _ in range(connections)]
        while not stop.is_set():
            await asyncio.sleep(0.2)
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)

    asyncio.run(run())


async def slowloris(port: int, connections: int, seconds: float) -> None:
    stop = multiprocessing.Event()
    attacker = multiprocessing.Process(target=slowloris_attacker, args=(port, connections, stop))
    attacker.start()
    await asyncio.sleep(5)  # let the connections pile up
    results: list[float | None] = []
    probing_stop = asyncio.Event()
    probing = asyncio.create_task(probe(port, probing_stop, results))
    await asyncio.sleep(seconds)
    probing_stop.set()
    await probing
    stop.set()
    attacker.join(30)
    attacker.kill()
    report(f"slowloris ({connections} connections, {seconds:.0f} s)", results)


def webhook(repo: Path) -> None:
    sys.path.insert(0, str(repo))
    from server.api.background.webhook_signing import load_or_create_signing_key
    from server.api.background.webhooks import WebhookDispatcher
    from server.jobs.factory import open_job_store

    stop = threading.Event()

    def bad_receiver(trickle: bool) -> str:
        listener = socket.create_server(("127.0.0.1", 0))

        def hold(conn: socket.socket) -> None:
            with conn:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\n" + b"X-a: b\r\n" * 100_000 if trickle else b"":
                    if stop.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
                stop.wait()

        def accept() -> None:
            while not stop.is_set():
                conn, _ = listener.accept()
                threading.Thread(target=hold, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/hook"

    delivered = threading.Event()

    good = socket.create_server(("127.0.0.1", 0))

    def serve_good() -> None:
        conn, _ = good.accept()
        with conn:
            conn.recv(65536)
            delivered.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve_good, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_job_store(Path(tmp) / "jobs.sqlite3")
        urls = [bad_receiver(False) for _ in range(4)] + [bad_receiver(True)]
        urls.append(f"http://127.0.0.1:{good.getsockname()[1]}/hook")
        for url in urls:
            job = store.submit("fal-ai/wan-vace-14b", {"prompt": "p"}, public_base="http://h:1",
                               webhook_url=url)
            store.claim("w")
            store.complete(job.id, "w", {"seed": 1})
        key = load_or_create_signing_key(Path(tmp) / "key.pem")
        dispatcher = WebhookDispatcher(store, key, max_attempts=3, retry_base_s=600, retry_max_s=600,
                                       timeout_s=15.0, allow_hosts=("127.0.0.1",))
        started = time.perf_counter()
        dispatcher.start()
        limit = 120.0
        waited = f"{time.perf_counter() - started:.2f} s" if delivered.wait(limit) else f"> {limit:.0f} s"
        print(f"webhook: 4 silent receivers + 1 trickling one, then a good one: the good webhook arrived "
              f"after {waited}", flush=True)
        stop.set()
        dispatcher._stop.set()  # the old dispatcher's stop() would wait on a trickling receiver


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=["header", "slowloris", "webhook"])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose server is attacked")
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--header-mib", type=int, default=64)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--nofile", type=int, default=2048, help="the server's descriptor limit (slowloris)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long slowloris is probed")
    args = parser.parse_args()
    print(f"repo {args.repo} at {git_head(args.repo)}", flush=True)
    if args.attack == "webhook":
        webhook(args.repo.resolve())
        os._exit(0)  # the old dispatcher's thread may still be stuck on a trickling receiver
    with server(args.repo, args.nofile if args.attack == "slowloris" else None) as port:
        if args.attack == "header":
            asyncio.run(header_attack(port, args.attackers, args.header_mib))
        else:
            asyncio.run(slowloris(port, args.connections, args.seconds))


def git_head(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%h %s"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip()[:80]


if __name__ == "__main__":
    main()
