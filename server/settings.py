"""Server settings: one frozen model, the single source of every option's name, type, default and choices.

Values come from, highest first: `vace serve` flags, environment variables, a `--config` file (TOML or
JSON, server/config_file.py), the defaults below. Each field marked `Flag(...)` is a `vace serve` flag
(server/flags.py derives argparse from it) and a config-file key; every field is also read from the
environment variable `VACE_<FIELD NAME>` (e.g. VACE_MAX_QUEUE_LENGTH), except `cors_allow_origins`, which
keeps its name VACE_CORS_ORIGINS. List settings (VACE_API_KEYS, VACE_FETCH_ALLOW_HOSTS, VACE_CORS_ORIGINS)
are comma-separated in the environment. The API process hands the result to workers as JSON (`to_json`).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from server.config_file import ConfigFileSource
from server.flags import Flag

ENV_PREFIX = "VACE_"
DEFAULT_MODEL_DIR = Path("weights") / "Wan2.1-VACE-14B-diffusers"
# The worker's own defaults and choices live in pipelines/memory.py and preprocessors/annotators/, which the
# API process must not import (torch, numpy); tests/server/test_settings.py and test_settings_sources.py keep
# them equal to these.
MemoryPlan = Literal["auto", "all_on_gpu", "model_offload", "group_offload", "sequential_offload"]
VaeTiling = Literal["auto", "on", "off"]
Attention = Literal["auto", "native", "cudnn", "flash3", "sage"]  # pipelines/attention.py's choices
Compile = Literal["auto", "on", "off"]  # pipelines/compile.py's choices
Fp8 = Literal["auto", "on", "off"]  # pipelines/fp8.py's choices
DepthModel = Literal["midas", "depth-anything-v2"]
PoseModel = Literal["dwpose", "openpose"]
SafetyMissing = Literal["warn", "refuse"]
FileUrls = Literal["api", "presigned"]
MaskTracking = Literal["track", "static"]
LogFormat = Literal["text", "json"]
MEMORY_PLANS: tuple[str, ...] = get_args(MemoryPlan)
VAE_TILING: tuple[str, ...] = get_args(VaeTiling)
ATTENTION_BACKENDS: tuple[str, ...] = get_args(Attention)
COMPILE_MODES: tuple[str, ...] = get_args(Compile)
FP8_MODES: tuple[str, ...] = get_args(Fp8)
DEFAULT_ANNOTATORS_DIR = Path("weights") / "annotators"

# Input caps (server/contract/limits.py's InputLimits). Inputs are checked from the probe (header and first
# frame), before the rest is decoded: a 16k x 16k frame is ~800 MB as RGB, and the schema bounds the output,
# not the input.
MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_SECONDS = 600.0
MAX_INPUT_FRAMES = 36_000
# Frame rates outside this range are broken or hostile headers, not recordings (phones' slow motion is 240).
MIN_INPUT_FPS = 1.0
MAX_INPUT_FPS = 240.0
# Each reference image is one more latent frame in generation; VACE's own examples use one to three.
MAX_REFERENCE_IMAGES = 8
# RGB bytes one job's decoded inputs may hold (server/worker/inputs.py). The most a 720p request needs is a
# 241-frame input at the working size (1280x720: 0.67 GB; reframe with zoom_factor 1 keeps 2x per side:
# 2.7 GB) plus its mask video or images; 4 GiB admits those and refuses what would take a worker to 72 GB.
MAX_DECODED_BYTES = 4 * 1024**3
# Wall-clock seconds a job's input downloads may take together: a source trickling bytes must not hold a GPU
# worker. 600 s fetches the 2 GiB download cap at 3.6 MB/s.
DOWNLOAD_DEADLINE_S = 600.0
# The longest output a valid request can ask for: reframe with num_frames 241 (the schema's maximum, which
# also caps match_input_num_frames), temporal_downsample_factor 0 and temporal_upsample_factor 5 (both at
# most 5) is 240 gaps x 6 + 1 frames. Downsampling shortens it: d = u = 5 generates 41 frames and adds 10
# between each pair, 441 in all. The default admits every request fal's schema allows (refusing a valid
# fal request by default would break compatibility); at 720p the 1441 frames are 1441 x 1280 x 720 x 3
# bytes = 4.0 GB of RGB in the worker before encoding (241 generated frames: 0.67 GB), so an operator with
# less host memory lowers it. tests/server/test_output_cap.py keeps this equal to the schema's bounds.
LARGEST_VALID_OUTPUT = 1441

HOUR = 3600.0
GiB = 1024**3
DEFAULT_RETENTION_S = 7 * 24 * HOUR  # server/api/background/retention.py's default too
DEFAULT_UPLOAD_MAX_AGE_S = 24 * HOUR
# Positive limits: 0 or less would refuse everything (or keep nothing); infinity is no limit to check.
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]
# A comma-separated environment variable, a list in a config file, or a repeated flag.
NameList = Annotated[tuple[str, ...], NoDecode]
# Fields the worker reads from its environment (preprocessors/annotators/registry.py), not from Settings.
WORKER_ENV_FIELDS = ("annotators_dir", "depth_model", "pose_model", "safety_missing", "safety_threshold",
                     "mask_tracking")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True,
                                      extra="forbid", populate_by_name=True)

    model: Annotated[str, Flag("model", metavar="tiny|PATH")] = Field(
        str(DEFAULT_MODEL_DIR), validate_default=True,
        description="'tiny' (random test model, no download) or a diffusers folder")
    data_dir: Annotated[Path, Flag("data-dir")] = Field(
        Path("data"), validate_default=True, description="jobs database, outputs and uploads")
    host: Annotated[str, Flag("host")] = Field("127.0.0.1", description="address to listen on")
    port: Annotated[int, Flag("port")] = Field(8000, description="port to listen on")
    device: Annotated[str | None, Flag("device")] = Field(
        None, description="cuda, cuda:1 or cpu (default: cuda when available)")
    num_workers: Annotated[int, Flag("workers")] = Field(1, description="worker processes (without --gpus)")
    gpus: Annotated[str | None, Flag("gpus")] = Field(
        None, description="comma-separated GPU ids: one worker per GPU")
    # server/worker/group.py; a request that does not split over the group runs on one of its GPUs.
    gpus_per_job: Annotated[PositiveInt, Flag("gpus-per-job")] = Field(
        1, description="GPUs per job: each worker is a group of N ranks (torchrun, NCCL; gloo on a CPU) that "
                       "runs every job with context parallelism (Ulysses)")
    # server/api/background/supervisor.py: a worker process that lives but stopped beating (SIGSTOPped, or
    # stuck holding the GIL) is killed and restarted, its job requeued. Beats come every 2 s, from a thread
    # that keeps beating while the model loads and a job runs, so only a stuck process misses this many.
    worker_stall_timeout_s: Annotated[PositiveFloat, Flag("worker-stall-timeout")] = Field(
        120.0, description="seconds without a heartbeat after which a live worker process is killed and "
                           "restarted")
    # A job that kills its worker this many times is failed, not retried forever.
    max_attempts: Annotated[PositiveInt, Flag("max-attempts")] = Field(
        2, description="attempts for a job whose worker dies before it is failed")
    public_url: Annotated[str | None, Flag("public-url")] = Field(
        None, description="base URL for returned links, e.g. behind a proxy")
    memory_plan: Annotated[MemoryPlan, Flag("memory-plan")] = Field(
        "auto", description="GPU placement; auto picks from free memory (see pipelines/memory.py)")
    vae_tiling: Annotated[VaeTiling, Flag("vae-tiling")] = Field("auto", description="tile the VAE")
    attention: Annotated[Attention, Flag("attention")] = Field(
        "auto", description="attention kernel; auto times the available ones on the worker's GPU at start-up "
                            "and keeps the fastest correct one")
    compile: Annotated[Compile, Flag("compile")] = Field(
        "auto", description="regional torch.compile of the transformer blocks; auto: on for CUDA without "
                            "block offload, off on a CPU (kernels cached under <data-dir>/compile_cache)")
    # pipelines/fast_mode.py: loaded once at the worker's start; a file that does not load stops the start.
    fast_lora: Annotated[Path | None, Flag("fast-lora", metavar="FILE")] = Field(
        None, description="a step-distillation LoRA (.safetensors, e.g. a 4-step Wan 14B one) for fast mode: "
                          "requests with num_inference_steps <= 8 and guidance_scale <= 1 run with it, all "
                          "others without")
    fast_lora_strength: Annotated[PositiveFloat, Flag("fast-lora-strength")] = Field(
        1.0, description="the --fast-lora LoRA's scale")
    # pipelines/fp8.py: `on` where FP8 cannot run stops the worker's start with the reason.
    fp8: Annotated[Fp8, Flag("fp8")] = Field(
        "auto", description="FP8 (torchao row-wise float8) weights and activations for the transformer "
                            "blocks' linear layers; auto: on only on a GPU that supports it (compute "
                            "capability 8.9+, torchao) when it lets a faster memory plan fit than bf16 "
                            "(e.g. all_on_gpu on a 48 GB card)")
    # pipelines/compile_warmup.py parses and explains it (the API process cannot import it: torch).
    compile_warmup: Annotated[str, Flag("compile-warmup")] = Field(
        "480p,720p", pattern=r"^\s*(none|[0-9a-zA-Z]+(\s*,\s*[0-9a-zA-Z]+)*)\s*$",
        description="shapes the compiled transformer runs once at load, before the worker is ready: presets "
                    "(480p: 16:9 at 81 frames) or WIDTHxHEIGHT[xFRAMES], comma-separated, or none")
    # pipelines/cfg_truncation.py; off until a measurement with real weights shows the quality holds.
    cfg_truncation: Annotated[float, Flag("cfg-truncation")] = Field(
        0.0, ge=0.0, lt=1.0, allow_inf_nan=False,
        description="share of the last denoising steps run without the unconditional pass (guidance 1 "
                    "there): 0.2 saves half of the forwards of the last 20% of steps; 0 = off")
    api_keys: Annotated[NameList, Flag("api-key", repeat=True)] = Field(
        (), repr=False, description="require `Authorization: Key <key>` (repeatable; also VACE_API_KEYS)")
    # Hostnames or CIDRs that input URLs and webhooks may reach although private/loopback (SSRF guard).
    fetch_allow_hosts: Annotated[NameList, Flag("fetch-allow", repeat=True)] = Field(
        (), description="host or CIDR that input URLs may reach although private (repeatable; also "
                        "VACE_FETCH_ALLOW_HOSTS)")
    # Browsers calling /api/fal/proxy or upload URLs from another origin: comma-separated, or "*".
    cors_allow_origins: Annotated[str, Flag("cors-origin", repeat=True)] = Field(
        "*", validation_alias="vace_cors_origins",
        description="browser origin allowed to call the API, e.g. https://app.example.com (repeatable; "
                    "also VACE_CORS_ORIGINS, comma-separated)")
    retention_s: Annotated[PositiveFloat, Flag("retention-hours", scale=HOUR)] = Field(
        DEFAULT_RETENTION_S, description="finished jobs and their files are deleted after this long")
    # Never longer than retention_s (server/api/background/retention.py).
    upload_max_age_s: Annotated[PositiveFloat, Flag("upload-max-age-hours", scale=HOUR)] = Field(
        DEFAULT_UPLOAD_MAX_AGE_S,
        description="uploads started but not completed are deleted after this long without a write (at most "
                    "--retention-hours)")
    annotators_dir: Annotated[Path, Flag("annotators-dir")] = Field(
        DEFAULT_ANNOTATORS_DIR, validate_default=True,
        description="depth/pose/interpolation/safety/LLM models")
    depth_model: Annotated[DepthModel, Flag("depth-model")] = Field(
        "midas", description="annotator for depth with preprocess=true")
    pose_model: Annotated[PoseModel, Flag("pose-model")] = Field(
        "dwpose", description="annotator for pose with preprocess=true")
    safety_missing: Annotated[SafetyMissing, Flag("safety-missing")] = Field(
        "warn", description="without the safety checker's weights: run unchecked with a warning, or "
                            "refuse requests that enable it")
    safety_threshold: Annotated[float, Flag("safety-threshold")] = Field(
        0.5, ge=0.0, le=1.0, description="NSFW probability at which a video is flagged")
    mask_tracking: Annotated[MaskTracking, Flag("mask-tracking")] = Field(
        "track", description="inpainting's mask_image_url: follow the object it marks in the first frame "
                             "through the video (SAM 2.1), or apply it unchanged to every frame")
    max_input_pixels: Annotated[PositiveInt, Flag("max-input-pixels")] = Field(
        MAX_INPUT_PIXELS, description="largest input frame or image, width x height")
    max_input_seconds: Annotated[PositiveFloat, Flag("max-input-seconds")] = Field(
        MAX_INPUT_SECONDS, description="longest input video in seconds")
    max_input_frames: Annotated[PositiveInt, Flag("max-input-frames")] = Field(
        MAX_INPUT_FRAMES, description="most frames an input video may have (as the container states it)")
    max_output_frames: Annotated[PositiveInt, Flag("max-output-frames")] = Field(
        LARGEST_VALID_OUTPUT, description="longest output video in frames, after reframe's interpolation")
    min_input_fps: Annotated[PositiveFloat, Flag("min-input-fps")] = Field(
        MIN_INPUT_FPS, description="lowest frame rate an input video may have")
    max_input_fps: Annotated[PositiveFloat, Flag("max-input-fps")] = Field(
        MAX_INPUT_FPS, description="highest frame rate an input video may have")
    max_reference_images: Annotated[PositiveInt, Flag("max-reference-images")] = Field(
        MAX_REFERENCE_IMAGES, description="most ref_image_urls a request may have")
    max_decoded_bytes: Annotated[PositiveInt, Flag("max-decoded-bytes")] = Field(
        MAX_DECODED_BYTES, description="RGB bytes one job's decoded inputs may hold (at the working size)")
    # JSON request bodies; uploads (server/api/routes/storage.py) are capped by max_upload_bytes instead.
    max_request_bytes: Annotated[PositiveInt, Flag("max-request-bytes")] = Field(
        64 * 1024**2, description="largest JSON request body, data: URIs included (uploads are not counted)")
    max_queue_length: Annotated[PositiveInt, Flag("max-queue-length")] = Field(
        1000, description="queued requests beyond which submit answers 429")
    max_input_bytes: Annotated[PositiveInt, Flag("max-download-bytes")] = Field(
        2 * GiB, description="largest input a URL or data: URI may deliver")
    download_timeout_s: Annotated[PositiveFloat, Flag("download-timeout")] = Field(
        60.0, description="seconds an input download may wait for the connection or for more bytes")
    download_deadline_s: Annotated[PositiveFloat, Flag("download-deadline")] = Field(
        DOWNLOAD_DEADLINE_S, description="seconds all of a job's input downloads may take together, "
                                         "wall clock (connect, headers, body, redirects)")
    max_upload_bytes: Annotated[PositiveInt, Flag("max-upload-bytes")] = Field(
        2 * GiB, description="largest file a client may upload to /storage")
    # HTTP connections (server/api/http_protocol.py). A reverse proxy facing the internet should add its own
    # per-client limits (README, "Security and limits").
    max_header_bytes: Annotated[PositiveInt, Flag("max-header-bytes")] = Field(
        64 * 1024, description="largest request line plus headers, else 431")
    header_timeout_s: Annotated[PositiveFloat, Flag("header-timeout")] = Field(
        10.0, description="seconds a connection has to send its request line and headers, else 408")
    body_timeout_s: Annotated[PositiveFloat, Flag("body-timeout")] = Field(
        60.0, description="seconds a request body may send nothing while the server reads it, else 408")
    min_body_rate: Annotated[PositiveFloat, Flag("min-body-rate")] = Field(
        1024.0, description="bytes/s a request body must average: it may take --body-timeout plus one "
                            "second per this many bytes received, else 408")
    max_connections: Annotated[PositiveInt, Flag("max-connections")] = Field(
        1000, description="open HTTP connections; beyond it the longest-idle or half-sent one is closed, "
                          "or the new one gets a 503 when all are busy")
    # server/files/free_space.py: uploads, data: URIs and submits are answered 507 rather than fill the disk.
    min_free_disk_bytes: Annotated[NonNegativeInt, Flag("min-free-disk-bytes")] = Field(
        GiB, description="free space under --data-dir below which uploads and submits are refused (507); "
                         "0 turns the check off")
    log_level: Annotated[str, Flag("log-level")] = Field("info", description="uvicorn's log level")
    log_format: Annotated[LogFormat, Flag("log-format")] = Field(
        "text", description="text, or json: one JSON object a line with job id, worker id and phase "
                            "(server and workers; server/logs.py)")
    preview_every: Annotated[int, Flag("preview-every", metavar="STEPS")] = Field(
        5, ge=0, description="a live preview of the latents every this many denoising steps (and after "
                             "the last); 0 turns previews off")
    # Off by default: fal's clients poll status at 10 Hz per request, which would be most of the log (and
    # a quarter of the API process's CPU at 2000 polls/s, measured with wrk).
    access_log: Annotated[bool, Flag("access-log")] = Field(
        False, description="log every HTTP request (uvicorn's log)")
    ssl_certfile: Annotated[str | None, Flag("ssl-certfile")] = Field(
        None, description="serve HTTPS with this PEM certificate (chain)")
    ssl_keyfile: Annotated[str | None, Flag("ssl-keyfile")] = Field(
        None, description="the PEM private key for --ssl-certfile")
    ssl_self_signed: Annotated[bool, Flag("ssl-self-signed")] = Field(
        False, description="serve HTTPS with a certificate created once under <data-dir>/tls/")
    # Past one machine (README "Running on several machines"). The URL may carry a password, so it is kept
    # out of reprs and out of the workers' argv (handed to them in their environment, `worker_env`); libpq's
    # PGPASSWORD and ~/.pgpass work as well. S3 credentials and endpoint come from boto3's own AWS_*
    # environment variables.
    database_url: Annotated[str | None, Flag("database-url", metavar="postgresql://...")] = Field(
        None, repr=False, description="keep jobs in this PostgreSQL database instead of <data-dir>'s SQLite "
                                      "file, shared by API replicas and `vace worker` boxes (also "
                                      "VACE_DATABASE_URL)")
    storage: Annotated[str | None, Flag("storage", metavar="s3://BUCKET/PREFIX")] = Field(
        None, description="keep outputs and uploads in this S3-compatible bucket instead of <data-dir>/files "
                          "(credentials and endpoint from AWS_* variables)")
    file_urls: Annotated[FileUrls, Flag("file-urls")] = Field(
        "api", description="with --storage: 'api' serves /files/... through this server; 'presigned' "
                           "redirects each download to a fresh presigned bucket URL")
    presigned_url_ttl_s: Annotated[PositiveFloat, Flag("presigned-url-seconds")] = Field(
        3600.0, le=7 * 24 * HOUR,
        description="how long a presigned download link stays valid (at most 7 days)")
    # Heartbeats come every 2 s (server/worker/loop.py); a box whose worker misses them this long is
    # presumed lost and its job requeued by another box. Only with --database-url: locally, a worker's exit
    # is seen at once.
    worker_lease_s: Annotated[PositiveFloat, Flag("worker-lease-seconds")] = Field(
        30.0, description="with --database-url: seconds without a heartbeat after which another box takes "
                          "over a worker's job")
    config_file: Annotated[Path | None, Flag("config", metavar="FILE")] = Field(
        None, description="TOML or JSON file of settings, keyed by these flags' names; flags and VACE_* "
                          "environment variables override it (also VACE_CONFIG_FILE)")
    # Webhook retries (server/api/background/webhooks.py): delay base * 2**attempt, capped; tests shorten it
    # by environment variable.
    webhook_max_attempts: int = 10
    webhook_retry_base_s: float = 15.0
    webhook_retry_max_s: float = 1800.0
    webhook_timeout_s: float = 15.0  # the deadline of one attempt, DNS to the answer's headers
    webhook_concurrency: PositiveInt = 32  # deliveries under way at once (at most 4 to one receiver)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the keyword arguments) > environment > the --config file > defaults."""
        init_kwargs = getattr(init_settings, "init_kwargs", {})
        config_file = init_kwargs.get("config_file") if "config_file" in init_kwargs else os.environ.get(
            f"{ENV_PREFIX}CONFIG_FILE")
        return init_settings, env_settings, ConfigFileSource(settings_cls, config_file)

    @field_validator("fetch_allow_hosts", mode="before")
    @classmethod
    def _name_list(cls, value: Any) -> Any:
        return split_names(value) if isinstance(value, str) else value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        """A key that is empty or padded with spaces is a mistake that would silently turn auth off (or never
        match): refused at start. VACE_API_KEYS is a comma-separated list (spaces around the commas and
        stray commas are fine), but one that names no key at all is refused too."""
        if isinstance(value, str):
            keys = split_names(value)
            if not keys:
                raise ValueError(f"an API key must be non-empty; VACE_API_KEYS={value!r} names none "
                                 "(unset it to serve without keys)")
            return keys
        for key in value if isinstance(value, list | tuple) else ():
            if not isinstance(key, str) or not key.strip() or key != key.strip():
                raise ValueError("an API key must be non-empty, without surrounding spaces; got "
                                 f"{key!r} (omit --api-key and VACE_API_KEYS to serve without keys)")
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> Any:
        names = split_names(value) if isinstance(value, str) else value
        return ",".join(names) or "*" if isinstance(names, list | tuple) else value

    @field_validator("data_dir", "annotators_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        """Relative to the directory `vace serve` started in, whatever a worker's own directory."""
        return path if path.is_absolute() else path.resolve()

    @field_validator("fast_lora")
    @classmethod
    def _absolute_file(cls, path: Path | None) -> Path | None:
        """Relative to the directory `vace serve` started in, as --model (weights/loras/x.safetensors)."""
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else path.resolve()

    @field_validator("model")
    @classmethod
    def _model_folder(cls, model: str) -> str:
        return model if model == "tiny" or Path(model).is_absolute() else str(Path(model).resolve())

    @model_validator(mode="after")
    def _groups(self) -> Settings:
        """What a worker group needs, refused at start rather than when its ranks load the model."""
        if self.gpus_per_job == 1:
            return self
        gpus = split_names(self.gpus or "")
        if len(gpus) % self.gpus_per_job:
            raise ValueError(f"--gpus names {len(gpus)} GPUs, which do not form groups of --gpus-per-job "
                             f"{self.gpus_per_job}")
        if not gpus and self.num_workers > 1 and self.device != "cpu":
            raise ValueError(f"--workers {self.num_workers} groups of --gpus-per-job {self.gpus_per_job} "
                             "would share the same GPUs; name them with --gpus (e.g. --gpus 0,1,2,3)")
        if self.device not in (None, "cuda", "cpu"):
            raise ValueError(f"--device {self.device} names one GPU; a group of --gpus-per-job "
                             f"{self.gpus_per_job} takes its GPUs from --gpus (or the first ones visible)")
        if self.attention == "flash3":
            raise ValueError("--attention flash3 has no context parallelism in diffusers; with "
                             "--gpus-per-job use native, cudnn, sage or auto")
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def work_dir(self) -> Path:
        """Scratch space for downloaded inputs; a job's folder is removed when it ends."""
        return self.data_dir / "work"

    @property
    def uploads_dir(self) -> Path:
        """Upload slots and multipart parts until they are assembled into files_dir."""
        return self.data_dir / "uploads"

    @property
    def webhook_key_path(self) -> Path:
        """The Ed25519 key webhooks are signed with (server/api/background/webhook_signing.py)."""
        return self.data_dir / "webhook_ed25519.pem"

    @property
    def node_name(self) -> str:
        """This box's name in a shared job store: a supervisor (`vace serve` or `vace worker`) and the workers
        it starts. Two on one host need their own --data-dir, as they need their own scratch space."""
        return f"{socket.gethostname()}:{self.data_dir}"

    @property
    def worker_env(self) -> dict[str, str]:
        """Worker-only settings as the environment variables a worker reads when it starts, every one set
        so that a flag or the config file wins over what the worker would inherit."""
        values = {f"{ENV_PREFIX}{name.upper()}": getattr(self, name) for name in WORKER_ENV_FIELDS}
        env = {env_name: str(value) for env_name, value in values.items() if value is not None}
        if self.database_url:
            env[f"{ENV_PREFIX}DATABASE_URL"] = self.database_url  # not in argv (to_json)
        return env

    def to_json(self) -> str:
        """How the supervisor hands the whole configuration to a worker process."""
        # Workers need no keys, and argv is visible to every local user; the file has been read already.
        # The database URL (it may hold a password) travels in the worker's environment instead.
        return self.model_dump_json(exclude={"api_keys", "config_file", "database_url"})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        # Every other field is in the text; a VACE_CONFIG_FILE the worker inherits is not read again.
        return cls(**{**json.loads(text), "config_file": None})


def split_names(text: str) -> list[str]:
    """A comma-separated list as its non-empty, stripped items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def env_list(name: str) -> tuple[str, ...]:
    """A comma-separated environment variable as a tuple of non-empty, stripped items."""
    return tuple(split_names(os.environ.get(name, "")))
