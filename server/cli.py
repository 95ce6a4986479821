"""The `vace` command: `vace serve` runs the server, `vace worker` runs GPU workers for servers on other
machines, `vace download` fetches weights, `vace bench` times, `vace run` runs one job
(server/run_command.py).

Every option is a field of a pydantic model (server/settings.py's Settings for `serve`, DownloadOptions
below); server/flags.py turns the fields into flags.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from server.flags import Flag, add_flags, field_values
from server.logs import configure_logging
from server.settings import DEFAULT_ANNOTATORS_DIR, DEFAULT_MODEL_DIR, Settings

DEFAULT_REPO = "Wan-AI/Wan2.1-VACE-14B-diffusers"


class DownloadOptions(BaseModel):
    """`vace download`'s options."""

    repo: Annotated[str, Flag("repo")] = Field(DEFAULT_REPO, description="Hugging Face repository")
    dest: Annotated[Path | None, Flag("dest")] = Field(
        None, description=f"default weights/<repo name>, or {DEFAULT_ANNOTATORS_DIR} with --annotators")
    annotators: Annotated[bool, Flag("annotators")] = Field(
        False, description="fetch the annotators, interpolators, safety checker and prompt LLM instead")
    models: Annotated[str | None, Flag("models")] = Field(
        None, description="with --annotators: a comma-separated subset (default: all but DA-V2)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given on the command line (absent ones leave the lower sources and defaults)."""
    return {name: value for name, value in vars(args).items() if name not in ("command", "func")}


def _serve(args: argparse.Namespace) -> int:
    from server.api.data_dir_lock import DataDirInUse, hold_data_dir

    try:
        settings = Settings(**field_values(Settings, _given(args)))
    except (OSError, ValueError) as exc:  # ValueError: pydantic's, and an unreadable --config file
        print(f"vace serve: {exc}", file=sys.stderr)
        return 2
    model = Path(settings.model)
    api_only = settings.num_workers == 0 and not settings.gpus  # an API replica loads no model
    if settings.model != "tiny" and not api_only and not (model / "model_index.json").is_file():
        if model == DEFAULT_MODEL_DIR.resolve():
            print(f"No model in {DEFAULT_MODEL_DIR}/: run `vace download` first, or try it without weights "
                  "with `vace serve --model tiny`.", file=sys.stderr)
        else:
            print(f"{model} is not a diffusers model folder (no model_index.json); run `vace download` or "
                  "pass --model /path/to/Wan2.1-VACE-14B-diffusers.", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    if not settings.api_keys and not _is_loopback(settings.host):
        print(f"WARNING: serving on {settings.host} without API keys: anyone who reaches this port can run "
              "jobs and read results (set --api-key or VACE_API_KEYS).", file=sys.stderr, flush=True)
    try:
        with hold_data_dir(settings.data_dir):  # released when the server exits, however it exits
            return _run(settings)
    except DataDirInUse as exc:
        print(f"vace serve: {exc}", file=sys.stderr)
        return 2


def _run(settings: Settings) -> int:
    from server.api.app import create_app
    from server.api.http_protocol import HttpLimits
    from server.api.server import run_server

    certfile, keyfile = settings.ssl_certfile, settings.ssl_keyfile
    if settings.ssl_self_signed:
        from server.api.tls import ensure_self_signed

        cert, key = ensure_self_signed(settings.data_dir / "tls", settings.host)
        certfile, keyfile = str(cert), str(key)
        print(f"TLS with a self-signed certificate: clients trust it with SSL_CERT_FILE={cert}", flush=True)
    if bool(certfile) != bool(keyfile):
        print("--ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    limits = HttpLimits(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s,
                        settings.max_connections, settings.min_body_rate)
    run_server(create_app(settings), limits=limits, host=settings.host, port=settings.port,
               log_level=settings.log_level, access_log=settings.access_log, ssl_certfile=certfile,
               ssl_keyfile=keyfile,
               # JSON: uvicorn's own lines go through the root logger's JSON handler instead of its config.
               **({"log_config": None} if settings.log_format == "json" else {}))
    return 0


def _worker(args: argparse.Namespace) -> int:
    """GPU workers with no API, on a box that shares only the database and the bucket with the servers
    (README "Running on several machines"): the same supervisor as `vace serve` (one worker per --gpus
    entry, restarted when it dies, stopped gracefully on SIGTERM), its jobs from --database-url and its
    outputs to --storage."""
    import signal
    import threading

    from server.api.background.supervisor import Supervisor
    from server.jobs.factory import open_settings_job_store

    try:
        settings = Settings(**field_values(Settings, _given(args)))
    except (OSError, ValueError) as exc:
        print(f"vace worker: {exc}", file=sys.stderr)
        return 2
    if not settings.database_url or not settings.storage:
        print("vace worker needs --database-url postgresql://... and --storage s3://bucket/prefix (or "
              "VACE_DATABASE_URL and VACE_STORAGE), shared with the `vace serve` replicas; on one machine "
              "`vace serve` runs its own workers.", file=sys.stderr)
        return 2
    if settings.num_workers < 1 and not settings.gpus:
        print("vace worker: --workers must be at least 1", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = open_settings_job_store(settings)
    supervisor = Supervisor(settings, store)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    supervisor.start()
    print(f"vace worker: {len(supervisor.slots)} worker(s) on {settings.node_name}", flush=True)
    stop.wait()
    supervisor.stop()  # SIGTERM to each worker: running jobs go back to the queue at their next step
    store.close()
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _download(args: argparse.Namespace) -> int:
    options = DownloadOptions(**field_values(DownloadOptions, _given(args)))
    if options.annotators:
        from preprocessors.annotators.download import download_annotators

        dest = options.dest or DEFAULT_ANNOTATORS_DIR
        models = [m.strip() for m in options.models.split(",") if m.strip()] if options.models else None
        download_annotators(dest, models)
        print(f"Done. The server finds them in {dest}/ (or pass --annotators-dir {dest}).")
        return 0
    from pipelines.download import download_model

    dest = options.dest or Path("weights") / options.repo.split("/")[-1]
    print(f"Downloading {options.repo} into {dest}/ (about 75 GB for the 14B model)")
    download_model(options.repo, dest)
    print(f"Done. Start the server with: vace serve --model {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vace", description="fal's Wan VACE 14B API on your own GPU")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the fal-compatible server",
                           description="Precedence: flag > VACE_* environment variable > --config file > "
                                       "default.")
    add_flags(serve, Settings)
    serve.set_defaults(func=_serve)

    worker = sub.add_parser(
        "worker", help="run GPU workers for servers on other machines (--database-url, --storage)",
        description="Takes `vace serve`'s flags; --host, --port and the API's own options are ignored. "
                    "Precedence: flag > VACE_* environment variable > --config file > default.")
    add_flags(worker, Settings)
    worker.set_defaults(func=_worker)

    download = sub.add_parser("download", help="fetch model weights with huggingface_hub")
    add_flags(download, DownloadOptions)
    download.set_defaults(func=_download)

    # Listed for --help only: main() hands `vace run ...` to server/run_command.py (its options come from
    # the task's schema, so they are built once the task is known).
    sub.add_parser("run", add_help=False,
                   help="one job from local files to an MP4: vace run depth --video in.mp4 --prompt ... "
                        "-o out.mp4 (vace run TASK -h)")

    # Listed for --help only: main() hands `vace bench ...` to pipelines/bench/cli.py before parsing, so
    # the API process's command module never imports pipeline code.
    sub.add_parser("bench", add_help=False,
                   help="time the 14B model (random weights) on this GPU; --tiny on a CPU (vace bench -h)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from pipelines.bench.cli import main as bench_main

        return bench_main(argv[1:], command=["vace", *argv], prog="vace bench")
    if argv[:1] == ["run"]:
        from server.run_command import main as run_main

        return run_main(argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
