"""A job's live previews (pipelines/preview.py renders them; the job's file store keeps them) and the
fetcher that marks the "fetch" phase, both handed to the pipeline and the input reader by the runner."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.worker.fetch import Fetcher
from server.worker.progress import Progress
from server.worker.types import JobHooks

if TYPE_CHECKING:
    import torch

    from pipelines.preview import LatentPreview

log = logging.getLogger("vace.preview")


class Previews:
    """Every few steps: the latents as a small animation, stored (one file per job, rewritten) and announced
    in the job's logs and progress."""

    def __init__(self, fit: LatentPreview, hooks: JobHooks, job_id: str) -> None:
        self.fit = fit
        self.hooks = hooks
        self.file_stem = f"preview-{job_id[:8]}"
        self.seconds: list[float] = []

    @classmethod
    def for_job(cls, fit: LatentPreview | None, hooks: JobHooks, job_id: str) -> Previews | None:
        if fit is None or hooks.store_preview is None or hooks.preview_every <= 0:
            return None
        return cls(fit, hooks, job_id)

    def observe(self, video: torch.Tensor, latents: torch.Tensor) -> None:
        self.fit.observe(video, latents)

    def publish(self, step: int, latents: torch.Tensor) -> None:
        if not self.fit.ready or self.hooks.store_preview is None:
            return  # nothing to fit colours from yet (no informative encode on this worker)
        started = time.perf_counter()
        try:
            data, extension = self.fit.image(latents)
            url = self.hooks.store_preview(data, f"{self.file_stem}.{extension}")
        except Exception:  # noqa: BLE001 - a preview must never fail the job
            log.exception("preview after step %d failed", step)
            return
        self.seconds.append(time.perf_counter() - started)
        self.hooks.progress.set_preview(f"{url}?step={step}", step)


def latent_preview_for(pipe: Any) -> LatentPreview:
    """A fit for the pipeline's VAE (its latent normalisation read from its config)."""
    from pipelines.preview import LatentPreview

    config = pipe.vae.config
    channels = int(getattr(config, "z_dim", 16))
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    return LatentPreview(mean, std, channels)


class PhasedFetcher(Fetcher):
    """The worker's fetcher, with each download logged as the "fetch" phase (then back to "probe")."""

    def __init__(self, inner: Fetcher, progress: Progress) -> None:  # noqa: D107 - shares inner's settings
        self.__dict__.update(inner.__dict__)
        self._inner = inner
        self._progress = progress

    def fetch(self, url: str, field: str, dest_dir: Path, *, should_cancel: Callable[[], bool] | None = None,
              deadline: float | None = None) -> Path:
        if self._progress.current != "fetch":
            self._progress.enter("fetch", field)
        try:
            return self._inner.fetch(url, field, dest_dir, should_cancel=should_cancel, deadline=deadline)
        finally:
            self._progress.enter("probe")
