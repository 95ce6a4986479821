"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` package, one data folder per session.

`initdb` refuses to run as root, and CI runs as root: the cluster is made and run as the `postgres` user
the Debian package creates (or the current user when it is not root). The package is installed with apt
when no server binaries are found, as on a fresh CI machine. The server listens on a free loopback port,
trusts local connections (nothing else can reach it) and runs with fsync off: its data is thrown away.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 60.0


def server_binaries() -> Path:
    """The folder holding initdb and postgres, installing Debian's package if there is none."""
    found = _find_binaries()
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        found = _find_binaries()
    if found is None:
        raise RuntimeError("no PostgreSQL server binaries after `apt-get install postgresql`")
    return found


def _find_binaries() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One running cluster; `new_database()` hands each test module (or test) a fresh empty database."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str) -> None:
        self.bindir, self.root, self.port, self.user = bindir, root, port, user
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        data = self.root / "data"
        self._run_as([str(self.bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust",
                      "-E", "UTF8", "--no-sync"])
        log = open(self.root / "server.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=self._demote())
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("postgres exited: " + (self.root / "server.log").read_text()[-2000:])
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not start: " + (self.root / "server.log").read_text()[-2000:])

    def _ready(self) -> bool:
        result = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                capture_output=True)
        return result.returncode == 0

    def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        "-d", "postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True,
                       capture_output=True)
        return self.url(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: "smart" shutdown is enough for a throwaway cluster
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -- running as a non-root user ----------------------------------------------------------------------

    def _demote(self) -> Callable[[], None] | None:
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(self.user)

        def demote() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

        return demote

    def _run_as(self, cmd: list[str]) -> None:
        result = subprocess.run(cmd, capture_output=True, preexec_fn=self._demote())
        if result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode()[-2000:]}")


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bindir = server_binaries()
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
    root = Path(tempfile.mkdtemp(prefix="vace-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir, root, free_port(), user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
