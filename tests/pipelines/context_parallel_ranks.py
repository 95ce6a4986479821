"""One rank of tests/pipelines/test_context_parallel.py's group, run by torchrun on the CPU (gloo):
`python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.pipelines.context_parallel_ranks
MODEL_DIR OUT_DIR`.

Every rank loads the tiny model, measures its transformer's output before and after context parallelism is
enabled, then rank 0 leads the REQUESTS through pipelines/group_generate.py while the others follow. Each
rank writes what it saw to OUT_DIR (rank 0 the frames, as .npz); the test compares them with a
single-process run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import pipelines.step_policy as step_policy
from pipelines.context_parallel import enable_context_parallel
from pipelines.generate import GenerationCancelled, GenerationRequest
from pipelines.group_generate import ControlLink, Leader, follow
from pipelines.loader import load_pipeline
from pipelines.step_policy import CachePolicy
from tests.pipelines.test_generate import make_request

# Reuses every step after the first two (the last is always computed): the cache's residuals must line up
# with each rank's tokens.
ALWAYS_REUSE = CachePolicy(threshold=1e9, warmup_fraction=0.0, max_consecutive_skips=100)
CANCEL_AFTER = 2


def small_request(width: int = 64, height: int = 48, **overrides: object) -> GenerationRequest:
    """5 frames (2 latent frames): at 64x48, 2 x 3 x 4 = 24 tokens. The left half is kept."""
    rng = np.random.default_rng(1)
    video = rng.random((5, height, width, 3), dtype=np.float32)
    mask = np.zeros((5, height, width), dtype=np.float32)
    mask[:, :, width // 2:] = 1.0
    return make_request(video=video, mask=mask, width=width, height=height, **overrides)


def requests() -> dict[str, GenerationRequest]:
    """The requests the group runs, in order."""
    ref = np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    return {
        "plain": small_request(num_inference_steps=3),
        # One reference image is one more latent frame: (2 + 1) x 3 x 3 = 27 tokens, odd.
        "odd_tokens": small_request(48, 48, reference_images=[ref], num_inference_steps=2),
        # After the fallback put the plan back.
        "cached": small_request(num_inference_steps=5, acceleration="regular", seed=7),
        "cancelled": small_request(num_inference_steps=4),
    }


class StepCounter:
    """on_step for generate(); should_cancel turns true once `cancel_after` steps are done."""

    def __init__(self, cancel_after: int | None) -> None:
        self.done = 0
        self.cancel_after = cancel_after

    def __call__(self, done: int, total: int) -> None:
        self.done = done

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and self.done >= self.cancel_after


def transformer_inputs(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    config = transformer.config
    gen = torch.Generator().manual_seed(3)
    shape = (3, 6, 8)  # latent frames, height, width: 3 x 3 x 4 = 36 tokens
    return {
        "hidden_states": torch.randn(1, config.in_channels, *shape, generator=gen),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 8, config.text_dim, generator=gen),
        "control_hidden_states": torch.randn(1, config.vace_in_channels, *shape, generator=gen),
    }


def main(model_dir: Path, out_dir: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    step_policy.POLICIES["regular"] = ALWAYS_REUSE
    pipe = load_pipeline(model_dir, device="cpu")
    inputs = transformer_inputs(pipe.transformer)
    with torch.inference_mode():
        alone = pipe.transformer(**inputs, return_dict=False)[0]
        enable_context_parallel(pipe, world)
        split = pipe.transformer(**inputs, return_dict=False)[0]
    seen: dict[str, object] = {
        "transformer_max_abs_diff": float((split - alone).abs().max()),
        "transformer_equal": bool(torch.equal(split, alone)),
    }
    link = ControlLink()
    if rank == 0:
        leader = Leader(link)
        frames, logs = {}, []
        for name, req in requests().items():
            steps = StepCounter(cancel_after=CANCEL_AFTER if name == "cancelled" else None)
            try:
                frames[name] = leader.generate(pipe, req, on_step=steps, should_cancel=steps.should_cancel,
                                               on_log=logs.append)
                seen[name] = "done"
            except GenerationCancelled:
                seen[name] = f"cancelled after step {steps.done}"
        leader.stop()
        seen["logs"] = logs
        np.savez(out_dir / "frames.npz", **frames)
    else:
        outcomes: list[str] = []
        seen["runs"] = follow(pipe, link, on_run=lambda req, outcome: outcomes.append(outcome))
        seen["outcomes"] = outcomes
    (out_dir / f"rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
