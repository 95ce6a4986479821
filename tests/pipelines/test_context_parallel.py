"""Context parallelism for Wan VACE (pipelines/context_parallel.py) and generation across a group
(pipelines/group_generate.py): 2 gloo ranks on the CPU against a single-process run of the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import WanVACEPipeline

import pipelines.step_policy as step_policy
from pipelines.context_parallel import latent_tokens, request_refusal, split_refusal
from pipelines.generate import GenerationCancelled, generate
from pipelines.loader import load_pipeline
from tests.pipelines.context_parallel_ranks import ALWAYS_REUSE, CANCEL_AFTER, requests

ROOT = Path(__file__).resolve().parents[2]
GROUP_TIMEOUT_S = 240


def test_tokens_count_reference_images_as_latent_frames() -> None:
    # 81 frames at 832x480: 21 latent frames x 30 x 52 patches, the 14B model's 480p sequence.
    assert latent_tokens(81, 480, 832, 0, (1, 2, 2)) == 21 * 30 * 52
    assert latent_tokens(81, 480, 832, 2, (1, 2, 2)) == 23 * 30 * 52
    assert latent_tokens(5, 48, 48, 1, (1, 2, 2)) == 27


def test_split_refusal_names_what_does_not_divide() -> None:
    assert split_refusal(32_760, 40, 2) is None
    assert split_refusal(32_760, 40, 8) is None
    assert split_refusal(27, 2, 2) == "27 tokens do not divide by the group's 2 ranks"
    assert split_refusal(36, 40, 3) == "40 attention heads do not divide by the group's 3 ranks"
    assert split_refusal(27, 12, 3) is None
    assert split_refusal(25, 40, 3) == "25 tokens and 40 attention heads do not divide by the group's 3 ranks"


def test_a_pipeline_without_parallelism_is_refused(tiny_model_dir: Path) -> None:
    pipe = load_pipeline(tiny_model_dir, device="cpu")
    assert request_refusal(pipe, 17, 48, 64, 0) == "context parallelism is not enabled"


@pytest.fixture(scope="module")
def group_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two ranks (torchrun, gloo on the CPU) through tests/pipelines/context_parallel_ranks.py."""
    out = tmp_path_factory.mktemp("group")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tests.pipelines.context_parallel_ranks", str(tiny_model_dir), str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=GROUP_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    with np.load(out / "frames.npz") as frames:
        return {"ranks": ranks, "frames": dict(frames)}


@pytest.fixture(scope="module")
def alone(tiny_model_dir: Path) -> WanVACEPipeline:
    return load_pipeline(tiny_model_dir, device="cpu")


def test_the_split_transformer_equals_the_whole_one_exactly(group_run: dict[str, Any]) -> None:
    for seen in group_run["ranks"]:
        assert seen["transformer_max_abs_diff"] == 0.0
        assert seen["transformer_equal"]


def test_group_frames_equal_a_single_process_run(group_run: dict[str, Any], alone: WanVACEPipeline,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(step_policy.POLICIES, "regular", ALWAYS_REUSE)
    leader, follower = group_run["ranks"]
    frames = group_run["frames"]
    for name in ("plain", "cached", "odd_tokens"):
        assert leader[name] == "done"
        expected = generate(alone, requests()[name])
        assert frames[name].shape == expected.shape
        assert np.array_equal(frames[name], expected), name
    # The step cache reused steps on both ranks, with each rank's part of the residuals.
    assert "step cache: 3 of 5 steps computed (6 of 10 transformer forwards, reused steps 3, 4)" in " ".join(
        leader["logs"])


def test_a_request_that_does_not_split_runs_on_rank_0_alone(group_run: dict[str, Any]) -> None:
    leader, follower = group_run["ranks"]
    fallback = "Generating on one GPU of the group: 27 tokens do not divide by the group's 2 ranks"
    assert fallback in leader["logs"]
    # The follower joined the three runs that split (plain, cached, cancelled), not the odd one.
    assert follower["runs"] == 3
    assert leader["logs"].count("Generating across 2 GPUs (context parallel)") == 3


def test_every_rank_stops_at_the_step_the_leader_cancels(group_run: dict[str, Any],
                                                         alone: WanVACEPipeline) -> None:
    leader, follower = group_run["ranks"]
    assert leader["cancelled"] == f"cancelled after step {CANCEL_AFTER}"
    assert follower["outcomes"] == ["done", "done", f"cancelled after step {CANCEL_AFTER}"]
    assert "cancelled" not in group_run["frames"]
    # The same cancel alone stops at the same step (the request would otherwise run 4 steps).
    steps: list[int] = []
    with pytest.raises(GenerationCancelled, match=f"after step {CANCEL_AFTER} of 4"):
        generate(alone, requests()["cancelled"], on_step=lambda done, total: steps.append(done),
                 should_cancel=lambda: len(steps) >= CANCEL_AFTER)
