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
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator
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
DepthModel = Literal["midas", "depth-anything-v2"]
PoseModel = Literal["dwpose", "openpose"]
SafetyMissing = Literal["warn", "refuse"]
LogFormat = Literal["text", "json"]
MEMORY_PLANS: tuple[str, ...] = get_args(MemoryPlan)
VAE_TILING: tuple[str, ...] = get_args(VaeTiling)
ATTENTION_BACKENDS: tuple[str, ...] = get_args(Attention)
COMPILE_MODES: tuple[str, ...] = get_args(Compile)
DEFAULT_ANNOTATORS_DIR = Path("weights") / "annotators"

# Input caps (server/contract/limits.py's InputLimits). Inputs are checked from the probe (header and first
# frame), before the rest is decoded: a 16k x 16k frame is ~800 MB as RGB, and the schema bounds the output,
# not the input.
MAX_INPUT_PIXELS = 4096 * 4096
MAX_INPUT_SECONDS = 600.0
MAX_INPUT_FRAMES = 36_000
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
# A comma-separated environment variable, a list in a config file, or a repeated flag.
NameList = Annotated[tuple[str, ...], NoDecode]
# Fields the worker reads from its environment (preprocessors/annotators/registry.py), not from Settings.
WORKER_ENV_FIELDS = ("annotators_dir", "depth_model", "pose_model", "safety_missing", "safety_threshold")


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
    max_input_pixels: Annotated[PositiveInt, Flag("max-input-pixels")] = Field(
        MAX_INPUT_PIXELS, description="largest input frame or image, width x height")
    max_input_seconds: Annotated[PositiveFloat, Flag("max-input-seconds")] = Field(
        MAX_INPUT_SECONDS, description="longest input video in seconds")
    max_input_frames: Annotated[PositiveInt, Flag("max-input-frames")] = Field(
        MAX_INPUT_FRAMES, description="most frames an input video may have (as the container states it)")
    max_output_frames: Annotated[PositiveInt, Flag("max-output-frames")] = Field(
        LARGEST_VALID_OUTPUT, description="longest output video in frames, after reframe's interpolation")
    # JSON request bodies; uploads (server/api/routes/storage.py) are capped by max_upload_bytes instead.
    max_request_bytes: Annotated[PositiveInt, Flag("max-request-bytes")] = Field(
        64 * 1024**2, description="largest JSON request body, data: URIs included (uploads are not counted)")
    max_queue_length: Annotated[PositiveInt, Flag("max-queue-length")] = Field(
        1000, description="queued requests beyond which submit answers 429")
    max_input_bytes: Annotated[PositiveInt, Flag("max-download-bytes")] = Field(
        2 * GiB, description="largest input a URL or data: URI may deliver")
    download_timeout_s: Annotated[PositiveFloat, Flag("download-timeout")] = Field(
        60.0, description="seconds an input download may take")
    max_upload_bytes: Annotated[PositiveInt, Flag("max-upload-bytes")] = Field(
        2 * GiB, description="largest file a client may upload to /storage")
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
    config_file: Annotated[Path | None, Flag("config", metavar="FILE")] = Field(
        None, description="TOML or JSON file of settings, keyed by these flags' names; flags and VACE_* "
                          "environment variables override it (also VACE_CONFIG_FILE)")
    # Webhook retries (server/api/background/webhooks.py): delay base * 2**attempt, capped; tests shorten it
    # by environment variable.
    webhook_max_attempts: int = 10
    webhook_retry_base_s: float = 15.0
    webhook_retry_max_s: float = 1800.0
    webhook_timeout_s: float = 15.0

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

    @field_validator("model")
    @classmethod
    def _model_folder(cls, model: str) -> str:
        return model if model == "tiny" or Path(model).is_absolute() else str(Path(model).resolve())

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
    def worker_env(self) -> dict[str, str]:
        """Worker-only settings as the environment variables a worker reads when it starts, every one set
        so that a flag or the config file wins over what the worker would inherit."""
        values = {f"{ENV_PREFIX}{name.upper()}": getattr(self, name) for name in WORKER_ENV_FIELDS}
        return {env_name: str(value) for env_name, value in values.items() if value is not None}

    def to_json(self) -> str:
        """How the supervisor hands the whole configuration to a worker process."""
        # Workers need no keys, and argv is visible to every local user; the file has been read already.
        return self.model_dump_json(exclude={"api_keys", "config_file"})

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
