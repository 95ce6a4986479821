"""`vace run <task> --video in.mp4 --prompt ... -o out.mp4`: one job from local files to an MP4.

Every input field of the task's endpoint is an option, made from the endpoint's pydantic model (so a new
field is a new option): `--num-inference-steps 20`, `--enable-safety-checker/--no-enable-safety-checker`;
a `*_url` field also answers to its short name (`--video`, `--mask-video`) and takes a local path, which is
uploaded through the server's storage routes (docs/fal-protocol.md), and `*_urls` repeats (`--ref-image`).
The job goes through the queue of `--server` (default the local server), or, with `--model`, of a server
started in this process for the one job. A progress bar with phase, step and ETA on a terminal; plain
lines otherwise. Exit codes: 0 done, 1 the job failed, 2 the request was refused, 3 no server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from server.contract.endpoints import APP_ID, ENDPOINTS

DEFAULT_SERVER = "http://127.0.0.1:8000"
POLL_S = 0.5
TASKS = {("root" if e.id == APP_ID else e.id.removeprefix(APP_ID + "/")): e for e in ENDPOINTS.values()}
EXIT_FAILED, EXIT_REFUSED, EXIT_NO_SERVER = 1, 2, 3


class RunError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- options from the schema ---------------------------------------------------------------------------------


def _field_kind(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of pydantic's anyOf [X, null]."""
    for option in prop.get("anyOf", []):
        if option.get("type") != "null":
            return {**option, "description": prop.get("description", "")}
    return prop


def build_parser(task: str) -> argparse.ArgumentParser:
    endpoint = TASKS[task]
    parser = argparse.ArgumentParser(prog=f"vace run {task}",
                                     description=f"Run one {endpoint.id} job and save its video.")
    parser.add_argument("-o", "--output", type=Path, help="where to save the MP4 (default <task>-<id>.mp4)")
    parser.add_argument("--server", help=f"the server's URL (default {DEFAULT_SERVER}, or VACE_SERVER)")
    parser.add_argument("--model", help="no server: start one in this process with this model (tiny|PATH)")
    parser.add_argument("--data-dir", type=Path, help="with --model: where its jobs and files go "
                                                      "(default a temporary folder)")
    parser.add_argument("--api-key", default=os.environ.get("FAL_KEY") or os.environ.get("VACE_API_KEY"),
                        help="sent as `Authorization: Key ...` (default $FAL_KEY)")
    parser.add_argument("--timeout", type=float, default=24 * 3600.0, help="give up after this many seconds")
    schema = endpoint.input_model.model_json_schema()
    required = set(schema.get("required", []))
    fields = parser.add_argument_group("input fields (the endpoint's schema; see /docs)")
    for name, raw in schema["properties"].items():
        prop = _field_kind(raw)
        names = [f"--{name.replace('_', '-')}"]
        short = name.removesuffix("_urls") if name.endswith("_urls") else name.removesuffix("_url")
        if short != name:
            names.append(f"--{short.replace('_', '-')}")
        help_text = prop.get("description", "")
        if "default" in raw:
            help_text += f" (default {json.dumps(raw['default'])})"
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text.replace("%", "%%")}
        kind = prop.get("type")
        if kind == "boolean":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == "array":
            kwargs.update(action="append", metavar="PATH|URL" if name.endswith("_urls") else "VALUE")
            if not name.endswith("_urls"):
                kwargs["type"] = _json_or_text
        elif kind not in ("string", "integer", "number"):  # objects and unions: given as JSON
            kwargs.update(type=_json_or_text, metavar="JSON")
        else:
            kwargs["type"] = {"integer": int, "number": float}.get(kind or "", str)
            if "enum" in prop:
                kwargs["choices"] = prop["enum"]
            if name.endswith("_url"):
                kwargs["metavar"] = "PATH|URL"
        if name in required:
            kwargs["required"] = True
        fields.add_argument(*names, **kwargs)
    return parser


def _json_or_text(value: str) -> Any:
    """A JSON value where the text is one (numbers, objects, lists), else the text itself."""
    try:
        return json.loads(value)
    except ValueError:
        return value


# -- the client ------------------------------------------------------------------------------------------


class Client:
    def __init__(self, base: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Key {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base.rstrip("/"), headers=headers, timeout=60.0)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise RunError(f"cannot reach the server at {self.http.base_url}: {exc}", EXIT_NO_SERVER) from exc
        if response.status_code == 401:
            raise RunError("the server wants an API key: pass --api-key or set FAL_KEY", EXIT_REFUSED)
        return response

    def upload(self, path: Path) -> str:
        content_type = _content_type(path)
        init = self.request("POST", "/storage/upload/initiate",
                            json={"content_type": content_type, "file_name": path.name})
        if init.status_code != 200:
            raise RunError(f"upload of {path} refused: {init.status_code} {init.text}", EXIT_REFUSED)
        slot = init.json()
        with path.open("rb") as data:
            put = self.request("PUT", slot["upload_url"], content=data,
                               headers={"Content-Type": content_type})
        if put.status_code != 200:
            raise RunError(f"upload of {path} failed: {put.status_code} {put.text}", EXIT_REFUSED)
        return str(slot["file_url"])


def _content_type(path: Path) -> str:
    import mimetypes

    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _payload(args: argparse.Namespace, task: str, client: Client) -> dict[str, Any]:
    """The given fields; local paths in *_url(s) fields replaced by their uploaded URLs."""
    payload: dict[str, Any] = {}
    for name in TASKS[task].input_model.model_fields:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name.endswith("_url"):
            value = _uploaded(value, client)
        elif name.endswith("_urls"):
            value = [_uploaded(v, client) for v in value]
        payload[name] = value
    return payload


def _uploaded(value: str, client: Client) -> str:
    if value.startswith(("http://", "https://", "data:")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise RunError(f"{value}: no such file (give a local path or an http(s) URL)", EXIT_REFUSED)
    return client.upload(path)


# -- progress display ------------------------------------------------------------------------------------


class Display:
    """A bar redrawn in place on a terminal; one line per change otherwise (logs, CI)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = ""

    def update(self, status: dict[str, Any]) -> None:
        text = _describe(status)
        if text == self.last:
            return
        self.last = text
        if self.tty:
            fraction = float((status.get("progress") or {}).get("fraction") or 0.0)
            width = 30
            bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
            self.stream.write(f"\r[{bar}] {fraction * 100:5.1f}% {text}"[:200].ljust(100))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _describe(status: dict[str, Any]) -> str:
    if status["status"] == "IN_QUEUE":
        return f"queued, position {status.get('queue_position', 0)}"
    progress = status.get("progress") or {}
    if not progress:
        return str(status["status"]).lower().replace("_", " ")
    parts = [str(progress.get("phase_label") or progress.get("phase"))]
    if progress.get("steps") and progress.get("phase") == "denoise":
        parts.append(f"step {progress['step']}/{progress['steps']}")
    if progress.get("eta_seconds") is not None:
        parts.append(f"ETA {progress['eta_seconds']:.0f}s")
    parts.append(f"{float(progress.get('fraction') or 0) * 100:.0f}%")
    return ", ".join(parts)


# -- one job ---------------------------------------------------------------------------------------------


def run_job(client: Client, task: str, payload: dict[str, Any], output: Path | None, timeout: float,
            display: Display) -> Path:
    endpoint = TASKS[task].id
    submitted = client.request("POST", f"/queue/{endpoint}", json=payload)
    if submitted.status_code != 200:
        raise RunError(f"the server refused the request ({submitted.status_code}): {_detail(submitted)}",
                       EXIT_REFUSED)
    job = submitted.json()
    display.stream.write(f"request {job['request_id']}\n")
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = client.request("GET", job["status_url"]).json()
            display.update(status)
            if status["status"] == "COMPLETED":
                break
            if time.monotonic() > deadline:
                client.request("PUT", job["cancel_url"])
                raise RunError(f"gave up after {timeout:g}s; the request was cancelled", EXIT_FAILED)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        client.request("PUT", job["cancel_url"])
        raise
    finally:
        display.done()
    if status.get("error"):
        raise RunError(f"the job failed ({status.get('error_type')}): {status['error']}", EXIT_FAILED)
    result = client.request("GET", job["response_url"]).json()
    video = result["video"]
    dest = output or Path(f"{task}-{job['request_id'][:8]}.mp4")
    with client.http.stream("GET", video["url"]) as response, dest.open("wb") as out:
        if response.status_code != 200:
            raise RunError(f"could not download {video['url']}: {response.status_code}", EXIT_FAILED)
        for chunk in response.iter_bytes():
            out.write(chunk)
    return dest


def _detail(response: httpx.Response) -> str:
    try:
        return json.dumps(response.json().get("detail"))
    except ValueError:
        return response.text[:500]


@contextlib.contextmanager
def local_server(model: str, data_dir: Path | None) -> Iterator[str]:
    """A whole server (API and one worker) for this command only, on a free loopback port."""
    import socket

    import uvicorn

    from server.api.app import create_app
    from server.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with contextlib.ExitStack() as stack:
        folder = data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vace-run-")))
        settings = Settings.model_validate(
            {"model": model, "data_dir": folder, "host": "127.0.0.1", "port": port, "num_workers": 1})
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True, name="vace-run-server")
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(base, server, thread)
            yield base
        finally:
            server.should_exit = True
            thread.join(timeout=90)


def _wait_ready(base: str, server: Any, thread: threading.Thread) -> None:
    sys.stderr.write("loading the model in a local server...\n")
    while thread.is_alive():
        with contextlib.suppress(httpx.TransportError):
            ready = httpx.get(base + "/readyz", timeout=2.0)
            if ready.status_code == 200:
                return
            health = httpx.get(base + "/health", timeout=2.0).json()
            failed = [w for w in health.get("workers", []) if w["state"] == "failed"]
            if failed:
                raise RunError(f"the model did not load: {failed[0].get('detail')}", EXIT_FAILED)
        time.sleep(0.5)
    raise RunError("the local server stopped before it was ready", EXIT_NO_SERVER)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in TASKS:
        print(f"usage: vace run {{{','.join(TASKS)}}} [options]   (vace run TASK --help lists a task's "
              "fields)", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else EXIT_REFUSED
    task = argv[0]
    args = build_parser(task).parse_args(argv[1:])
    try:
        with contextlib.ExitStack() as stack:
            if args.model:
                base = stack.enter_context(local_server(args.model, args.data_dir))
            else:
                base = args.server or os.environ.get("VACE_SERVER") or DEFAULT_SERVER
            client = Client(base, args.api_key)
            payload = _payload(args, task, client)
            dest = run_job(client, task, payload, args.output, args.timeout, Display())
    except RunError as exc:
        hint = ""
        if exc.code == EXIT_NO_SERVER and not args.model:
            hint = " (start one with `vace serve`, or run in this process with --model tiny|PATH)"
        print(f"vace run: {exc}{hint}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("vace run: interrupted; the request was cancelled", file=sys.stderr)
        return 130
    print(dest)
    return 0
