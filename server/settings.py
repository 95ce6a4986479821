"""Server settings: one frozen object built by the CLI and handed to the app and the workers."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_MODEL_DIR = Path("weights") / "Wan2.1-VACE-14B-diffusers"
# The worker's choices (pipelines/memory.py), repeated here because the API process must not import torch;
# tests/server/test_settings.py keeps the two lists equal.
MEMORY_PLANS = ("auto", "all_on_gpu", "model_offload", "group_offload", "sequential_offload")
VAE_TILING = ("auto", "on", "off")
ATTENTION_BACKENDS = ("auto", "native", "cudnn", "flash3", "sage")  # pipelines/attention.py's choices


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    model: str  # "tiny" or a diffusers-format folder
    host: str = "127.0.0.1"
    port: int = 8000
    device: str | None = None  # None: CUDA when available, else CPU
    num_workers: int = 1
    max_attempts: int = 2  # a job that kills its worker this many times is failed, not retried forever
    public_url: str | None = None  # override for URLs in responses (behind a reverse proxy)
    max_input_bytes: int = 2 * 1024**3
    download_timeout_s: float = 60.0
    worker_env: dict[str, str] = field(default_factory=dict)
    memory_plan: str = "auto"  # one of MEMORY_PLANS: how the model is placed on the GPU
    vae_tiling: str = "auto"  # one of VAE_TILING
    attention: str = "auto"  # one of ATTENTION_BACKENDS: the transformer's attention kernel
    # Uploads (server/storage_api.py): the largest single file a client may upload.
    max_upload_bytes: int = 2 * 1024**3
    # Browsers calling /api/fal/proxy or upload URLs from another origin: comma-separated, or "*".
    cors_allow_origins: str = field(default_factory=lambda: ",".join(env_list("VACE_CORS_ORIGINS")) or "*")
    # Webhook retries (server/webhooks.py): delay base * 2**attempt, capped; tests shorten it by env var.
    webhook_max_attempts: int = 10
    webhook_retry_base_s: float = field(default_factory=lambda: _env_float("VACE_WEBHOOK_RETRY_BASE_S", 15.0))
    webhook_retry_max_s: float = 1800.0
    webhook_timeout_s: float = 15.0
    # Security and retention (server/fetch.py, server/auth.py, server/retention.py).
    # Hostnames or CIDRs that input URLs may reach even though they are private/loopback (SSRF guard).
    fetch_allow_hosts: tuple[str, ...] = field(default_factory=lambda: env_list("VACE_FETCH_ALLOW_HOSTS"))
    # API keys (`Authorization: Key <key>` or `Bearer <key>`); empty = no authentication.
    api_keys: tuple[str, ...] = field(default_factory=lambda: env_list("VACE_API_KEYS"), repr=False)
    retention_s: float = 7 * 24 * 3600.0  # finished jobs, their files and logs are deleted after this
    # Upload slots (initiated, never completed) are swept after this long without a write; never longer
    # than retention_s (server/retention.py).
    upload_max_age_s: float = 24 * 3600.0
    # Size caps (server/limits.py). Inputs are checked from the probe (header and first frame), before the
    # rest is decoded: a 16k x 16k frame is ~800 MB as RGB, and the schema bounds the output, not the input.
    max_input_pixels: int = 4096 * 4096  # per input frame or image (width x height)
    max_input_seconds: float = 600.0  # input video duration
    max_input_frames: int = 36_000  # input video frame count (as the container states it)
    max_output_frames: int = 1441  # frames a request may ask for (server/limits.py's InputLimits)
    # JSON request bodies; uploads (server/storage_api.py) are capped by max_upload_bytes instead.
    max_request_bytes: int = 64 * 1024**2
    max_queue_length: int = 1000  # IN_QUEUE jobs; submit answers 429 while this many are waiting

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
        """The Ed25519 key webhooks are signed with (server/webhook_signing.py)."""
        return self.data_dir / "webhook_ed25519.pem"

    def to_json(self) -> str:
        """How the supervisor hands the whole configuration to a worker process."""
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        data.pop("api_keys")  # workers need no keys, and argv is visible to every local user
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["data_dir"] = Path(data["data_dir"])
        # JSON has no tuples; every sequence field is a tuple so Settings stays hashable and immutable.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_list(name: str) -> tuple[str, ...]:
    """A comma-separated environment variable as a tuple of non-empty, stripped items."""
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())
