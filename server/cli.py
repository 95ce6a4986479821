"""The `vace` command: `vace serve` runs the server, `vace download` fetches weights."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from server.settings import DEFAULT_MODEL_DIR, MEMORY_PLANS, VAE_TILING, Settings

T = TypeVar("T", int, float)

DEFAULT_REPO = "Wan-AI/Wan2.1-VACE-14B-diffusers"


def positive(kind: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type for limits and durations: 0 or less would refuse everything (or keep nothing)."""
    def parse(text: str) -> T:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return parse


def _serve(args: argparse.Namespace) -> int:
    from server.api.app import create_app
    from server.api.server import run_server

    model = args.model
    if model is None:
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            print(f"No model in {DEFAULT_MODEL_DIR}/: run `vace download` first, or try it without weights "
                  "with `vace serve --model tiny`.", file=sys.stderr)
            return 2
        model = str(DEFAULT_MODEL_DIR)
    elif model != "tiny" and not (Path(model) / "model_index.json").is_file():
        print(f"{model} is not a diffusers model folder (no model_index.json); run `vace download` or pass "
              "--model /path/to/Wan2.1-VACE-14B-diffusers.", file=sys.stderr)
        return 2
    # Worker-only options travel as environment variables (read by pipelines/annotators.py).
    worker_env = {name: str(value) for name, value in (
        ("VACE_GPUS", args.gpus),
        ("VACE_ANNOTATORS_DIR", args.annotators_dir.resolve() if args.annotators_dir else None),
        ("VACE_DEPTH_MODEL", args.depth_model),
        ("VACE_POSE_MODEL", args.pose_model),
        ("VACE_SAFETY_MISSING", args.safety_missing),
        ("VACE_SAFETY_THRESHOLD", args.safety_threshold),
    ) if value is not None}
    settings = Settings(
        data_dir=args.data_dir.resolve(), model=model if model == "tiny" else str(Path(model).resolve()),
        host=args.host, port=args.port, device=args.device, num_workers=args.workers,
        max_attempts=args.max_attempts, public_url=args.public_url, worker_env=worker_env,
        memory_plan=args.memory_plan, vae_tiling=args.vae_tiling,
        **({"api_keys": tuple(args.api_key)} if args.api_key else {}),
        **({"fetch_allow_hosts": tuple(args.fetch_allow)} if args.fetch_allow else {}),
        **({"cors_allow_origins": ",".join(args.cors_origin)} if args.cors_origin else {}),
        retention_s=args.retention_hours * 3600.0, upload_max_age_s=args.upload_max_age_hours * 3600.0,
        max_input_pixels=args.max_input_pixels, max_input_seconds=args.max_input_seconds,
        max_input_frames=args.max_input_frames, max_output_frames=args.max_output_frames,
        max_request_bytes=args.max_request_bytes, max_queue_length=args.max_queue_length,
        max_input_bytes=args.max_download_bytes, download_timeout_s=args.download_timeout,
        max_upload_bytes=args.max_upload_bytes,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    certfile, keyfile = args.ssl_certfile, args.ssl_keyfile
    if args.ssl_self_signed:
        from server.api.tls import ensure_self_signed

        cert, key = ensure_self_signed(settings.data_dir / "tls", args.host)
        certfile, keyfile = str(cert), str(key)
        print(f"TLS with a self-signed certificate: clients trust it with SSL_CERT_FILE={cert}", flush=True)
    if bool(certfile) != bool(keyfile):
        print("--ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    run_server(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
               access_log=args.access_log, ssl_certfile=certfile, ssl_keyfile=keyfile)
    return 0


def _download(args: argparse.Namespace) -> int:
    if args.annotators:
        from preprocessors.annotators.download import download_annotators

        dest = args.dest or Path("weights") / "annotators"
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        download_annotators(dest, models)
        print(f"Done. The server finds them in {dest}/ (or pass --annotators-dir {dest}).")
        return 0
    from pipelines.download import download_model

    dest = args.dest or Path("weights") / args.repo.split("/")[-1]
    print(f"Downloading {args.repo} into {dest}/ (about 75 GB for the 14B model)")
    download_model(args.repo, dest)
    print(f"Done. Start the server with: vace serve --model {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vace", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the fal-compatible server")
    serve.add_argument("--model", default=None,
                       help=f"'tiny' (random test model, no download) or a diffusers folder "
                            f"(default: {DEFAULT_MODEL_DIR})")
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="jobs database and files")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (without --gpus)")
    serve.add_argument("--gpus", default=None, help="comma-separated GPU ids: one worker per GPU")
    serve.add_argument("--max-attempts", type=positive(int), default=2,
                       help="attempts for a job whose worker dies before it is failed")
    serve.add_argument("--public-url", default=None, help="base URL for returned links, e.g. behind a proxy")
    serve.add_argument("--memory-plan", choices=MEMORY_PLANS, default="auto",
                       help="GPU placement; auto picks from free memory (see pipelines/memory.py)")
    serve.add_argument("--vae-tiling", choices=VAE_TILING, default="auto")
    serve.add_argument("--api-key", action="append", default=[],
                       help="require `Authorization: Key <key>` (repeatable; also VACE_API_KEYS)")
    serve.add_argument("--fetch-allow", action="append", default=[],
                       help="host or CIDR that input URLs may reach although private (repeatable; "
                            "also VACE_FETCH_ALLOW_HOSTS)")
    serve.add_argument("--cors-origin", action="append", default=[],
                       help="browser origin allowed to call the API, e.g. https://app.example.com "
                            "(repeatable; also VACE_CORS_ORIGINS, comma-separated; default *)")
    serve.add_argument("--retention-hours", type=positive(float), default=7 * 24.0,
                       help="finished jobs and their files are deleted after this long (default 7 days)")
    serve.add_argument("--upload-max-age-hours", type=positive(float), default=24.0,
                       help="uploads started but not completed are deleted after this long without a "
                            "write (default 24, at most --retention-hours)")
    serve.add_argument("--annotators-dir", type=Path, default=None,
                       help="depth/pose/interpolation/safety/LLM models (default weights/annotators)")
    serve.add_argument("--depth-model", choices=["midas", "depth-anything-v2"], default=None,
                       help="annotator for depth with preprocess=true (default midas)")
    serve.add_argument("--pose-model", choices=["dwpose", "openpose"], default=None,
                       help="annotator for pose with preprocess=true (default dwpose)")
    serve.add_argument("--safety-missing", choices=["warn", "refuse"], default=None,
                       help="without the safety checker's weights: run unchecked with a warning (default) "
                            "or refuse requests that enable it")
    serve.add_argument("--safety-threshold", type=float, default=None,
                       help="NSFW probability at which a video is flagged (default 0.5)")
    serve.add_argument("--max-input-pixels", type=positive(int), default=4096 * 4096,
                       help="largest input frame or image, width x height (default 4096x4096)")
    serve.add_argument("--max-input-seconds", type=positive(float), default=600.0,
                       help="longest input video in seconds (default 600)")
    serve.add_argument("--max-input-frames", type=positive(int), default=36_000,
                       help="most frames an input video may have (default 36000)")
    serve.add_argument("--max-output-frames", type=positive(int), default=1441,
                       help="longest output video in frames, after reframe's interpolation (default 1441)")
    serve.add_argument("--max-request-bytes", type=positive(int), default=64 * 1024**2,
                       help="largest JSON request body, data: URIs included (default 64 MiB; uploads "
                            "are not counted)")
    serve.add_argument("--max-queue-length", type=positive(int), default=1000,
                       help="queued requests beyond which submit answers 429 (default 1000)")
    serve.add_argument("--max-download-bytes", type=positive(int), default=2 * 1024**3,
                       help="largest input a URL or data: URI may deliver (default 2 GiB)")
    serve.add_argument("--download-timeout", type=positive(float), default=60.0,
                       help="seconds an input download may take (default 60)")
    serve.add_argument("--max-upload-bytes", type=positive(int), default=2 * 1024**3,
                       help="largest file a client may upload to /storage (default 2 GiB)")
    serve.add_argument("--log-level", default="info")
    # Off by default: fal's clients poll status at 10 Hz per request, which would be most of the log (and
    # a quarter of the API process's CPU at 2000 polls/s, measured with wrk).
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request (uvicorn's log)")
    serve.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--ssl-keyfile", default=None, help="the PEM private key for --ssl-certfile")
    serve.add_argument("--ssl-self-signed", action="store_true",
                       help="serve HTTPS with a certificate created once under <data-dir>/tls/")
    serve.set_defaults(func=_serve)

    download = sub.add_parser("download", help="fetch model weights with huggingface_hub")
    download.add_argument("--repo", default=DEFAULT_REPO, help=f"default {DEFAULT_REPO}")
    download.add_argument("--dest", type=Path, default=None,
                          help="default weights/<repo name>, or weights/annotators with --annotators")
    download.add_argument("--annotators", action="store_true",
                          help="fetch the annotators, interpolators, safety checker and prompt LLM instead")
    download.add_argument("--models", default=None,
                          help="with --annotators: a comma-separated subset (default: all but DA-V2)")
    download.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
