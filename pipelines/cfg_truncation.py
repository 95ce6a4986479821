"""The --cfg-truncation setting: no unconditional pass in the last share of the denoising steps.

Classifier-free guidance costs a second transformer forward every step (the unconditional branch), and its
effect is concentrated in the early, high-noise steps that set the layout; late steps refine detail, where
guidance 1 (the conditional prediction alone) is the published "CFG truncation" trade-off. With fraction f and
N steps, the last floor(f x N) steps run the conditional pass only; the first step always keeps CFG.

How: WanVACEPipeline (diffusers 0.42, pipeline_wan_vace.py) re-reads `do_classifier_free_guidance`, i.e.
`_guidance_scale > 1`, at every step of its loop and skips the unconditional call when it is false, taking the
conditional prediction as is. The step-end callback sets `_guidance_scale = 1` after the last guided step, the
way diffusers' own pipelines turn CFG off mid-run; each call of the pipeline sets it again from its argument.
The step cache (pipelines/step_cache.py) keeps one residual per branch and decides on the conditional call,
so from then on it sees one call a step and the unconditional residual is dropped unused.

Off by default: the saving is certain (f/2 of the forwards with CFG on), the quality cost needs real weights
to judge, and none can reach this project's machines (README, "CFG truncation").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

_ATTR = "_vace_cfg_truncation"


def check_fraction(fraction: float) -> float:
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"cfg truncation must be in [0, 1), got {fraction}")
    return fraction


def configure_cfg_truncation(pipe: Any, fraction: float) -> None:
    """The worker's --cfg-truncation, kept on the loaded pipeline for generate() to read."""
    setattr(pipe, _ATTR, check_fraction(fraction))


def configured_fraction(pipe: Any) -> float:
    return float(getattr(pipe, _ATTR, 0.0))


@dataclass(frozen=True)
class CfgTruncation:
    """One generation's plan: steps `first_unguided` to num_steps - 1 (from 0) skip the unconditional pass."""

    fraction: float
    num_steps: int
    guided: bool  # guidance_scale > 1: there is an unconditional pass to skip

    @property
    def unguided_steps(self) -> int:
        if not self.guided:
            return 0
        # At most num_steps - 1: the first step always has CFG. The epsilon keeps 0.2 x 30 at 6, not 5.
        return min(self.num_steps - 1, math.floor(check_fraction(self.fraction) * self.num_steps + 1e-9))

    @property
    def first_unguided(self) -> int:
        return self.num_steps - self.unguided_steps

    def after_step(self, pipe: Any, step: int) -> bool:
        """Call from the step-end callback with the 0-based step just finished; True when CFG was just
        turned off for the remaining steps."""
        if self.unguided_steps and step + 1 == self.first_unguided:
            pipe._guidance_scale = 1.0  # do_classifier_free_guidance is now False for the rest of the loop
            return True
        return False

    def summary(self, forwards: int) -> str:
        return (f"CFG truncation {self.fraction:g}: no unconditional pass in the last {self.unguided_steps} "
                f"of {self.num_steps} steps; {forwards} transformer calls "
                f"(full CFG: {self.num_steps * (2 if self.guided else 1)})")


@contextmanager
def counted_calls(transformer: nn.Module) -> Iterator[list[int]]:
    """Counts the transformer's calls (a forward pre-hook, which also sees calls the step cache reduces to the
    embeddings and output head): the one-element list holds the count."""
    count = [0]

    def hook(*_: Any) -> None:
        count[0] += 1

    handle = transformer.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
