"""fal-client with no code changes at all: `vace serve --ssl-self-signed` plus three environment variables.

The server runs without workers (nothing here needs a generation): a submitted request stays queued
and is cancelled, and the run route is exercised with an input the schema rejects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import REPO, free_port

pytest.importorskip("fal_client", reason="pip install -e '.[test]' installs fal-client")
pytest.importorskip("cryptography", reason="--ssl-self-signed needs the cryptography package")

CLIENT_SCRIPT = textwrap.dedent("""
    import json, fal_client
    APP = "fal-ai/wan-vace-14b"
    out = {}
    handle = fal_client.submit(APP + "/depth", arguments={"prompt": "x", "video_url": "https://x/v.mp4"})
    out["request_id"] = handle.request_id
    out["status_url"] = handle.status_url
    out["queued"] = type(handle.status()).__name__
    fal_client.cancel(APP, handle.request_id)
    after = fal_client.status(APP, handle.request_id, with_logs=True)
    out["after"] = [type(after).__name__, after.error_type]
    try:
        fal_client.run(APP + "/depth", arguments={"video_url": "https://x/v.mp4"})
    except fal_client.FalClientHTTPError as exc:
        out["run"] = [exc.status_code, exc.message[0]["loc"]]
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    data_dir = tmp_path_factory.mktemp("tls") / "data"
    port = free_port()
    log = data_dir.parent / "server.log"
    cmd = [sys.executable, "-m", "server.cli", "serve", "--model", "tiny", "--data-dir", str(data_dir),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "0", "--ssl-self-signed",
           "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    cert = data_dir / "tls" / "cert.pem"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                if cert.is_file() and httpx.get(f"https://127.0.0.1:{port}/", verify=str(cert)).status_code:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert f"SSL_CERT_FILE={cert}" in log.read_text()
        yield port, cert
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_python_client_with_env_vars_only(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    env = {**os.environ, "FAL_RUN_HOST": f"127.0.0.1:{port}", "FAL_QUEUE_RUN_HOST": f"127.0.0.1:{port}/queue",
           "SSL_CERT_FILE": str(cert), "FAL_KEY": "local-key-id:local-key-secret"}
    proc = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status_url"] == f"https://127.0.0.1:{port}/queue/fal-ai/wan-vace-14b/requests/" \
                               f"{out['request_id']}/status"
    assert out["queued"] == "Queued"
    assert out["after"] == ["Completed", "client_cancelled"]
    assert out["run"] == [422, ["body", "prompt"]]
