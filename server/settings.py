"""Server settings: one frozen object built by the CLI and handed to the app and the workers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_MODEL_DIR = Path("weights") / "Wan2.1-VACE-14B-diffusers"


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

    def to_json(self) -> str:
        """How the supervisor hands the whole configuration to a worker process."""
        data = asdict(self)
        data["data_dir"] = str(self.data_dir)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["data_dir"] = Path(data["data_dir"])
        return cls(**data)
