"""When the step cache (pipelines/step_cache.py) may reuse the last computed step instead of running the
model.

fal's `acceleration` field picks a policy: `none` runs every step (no cache is installed at all), `low` and
`regular` skip steps whose output is predicted to differ little from the last computed one.

The prediction needs no offline calibration. Every step the latent input's relative L1 change since the
previous step is known for free. At computed steps the model's output change is measured too, and the
ratio of the two (output change per unit of input change, measured between the last two computed steps)
turns each skipped step's input change into an estimated output change. Those estimates accumulate from
the last computed step; while the sum stays under the policy's threshold the step is skipped, and the
first step at or over it is computed (which resets the sum). A zero threshold therefore computes every step.

Never skipped: the warm-up steps at the start, where the output moves fastest and the ratio is not known
yet (at least two steps, so one ratio has been measured), and the last step, which sets the fine detail.
Skips in a row are bounded, so an underestimated ratio cannot reuse one output for long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

Acceleration = Literal["none", "low", "regular"]  # server/contract/fields.py has the same choices
ACCELERATIONS: tuple[str, ...] = get_args(Acceleration)
MIN_WARMUP_STEPS = 2  # one output ratio needs two computed steps


@dataclass(frozen=True)
class CachePolicy:
    threshold: float  # accumulated estimated relative output change below which a step is skipped
    warmup_fraction: float  # leading share of the steps always computed
    max_consecutive_skips: int

    def warmup_steps(self, num_steps: int) -> int:
        return max(MIN_WARMUP_STEPS, math.ceil(self.warmup_fraction * num_steps))


# Not yet measured with real weights (none can reach this project's machines): the thresholds are set in the
# range published for runtime-adaptive step caches on Wan 14B (a few percent of accumulated output change),
# `low` at half of `regular`. The README's "Acceleration" paragraph says how to check them.
POLICIES: dict[str, CachePolicy] = {
    "low": CachePolicy(threshold=0.05, warmup_fraction=0.2, max_consecutive_skips=2),
    "regular": CachePolicy(threshold=0.10, warmup_fraction=0.1, max_consecutive_skips=3),
}


def policy_for(acceleration: str) -> CachePolicy | None:
    """The policy of an `acceleration` value; None for `none` (run every step, no cache)."""
    if acceleration not in ACCELERATIONS:
        raise ValueError(f"acceleration must be one of {', '.join(ACCELERATIONS)}, got {acceleration!r}")
    return POLICIES.get(acceleration)


@dataclass
class StepDecider:
    """The per-step decision for one generation of `num_steps` steps; steps are counted from 0."""

    policy: CachePolicy
    num_steps: int
    accumulated: float = 0.0
    consecutive_skips: int = 0
    # Output change per unit of input change between the last two computed steps; None until measured.
    rate: float | None = None
    input_change_since_compute: float = 0.0
    decisions: list[bool] = field(default_factory=list)  # True = computed, one per step so far

    def decide(self, step: int, input_change: float | None) -> bool:
        """Whether step `step` must be computed; `input_change` is its input's relative change since the
        previous step (None at the first step)."""
        if input_change is not None:
            self.input_change_since_compute += input_change
        compute = self._must_compute(step)
        if not compute:
            assert self.rate is not None and input_change is not None  # _must_compute checked both
            estimate = self.accumulated + self.rate * input_change
            compute = not estimate < self.policy.threshold  # NaN (an infinite rate times 0) computes
            if not compute:
                self.accumulated = estimate
        if compute:
            self.accumulated = 0.0
            self.consecutive_skips = 0
        else:
            self.consecutive_skips += 1
        self.decisions.append(compute)
        return compute

    def _must_compute(self, step: int) -> bool:
        return (
            step < self.policy.warmup_steps(self.num_steps)
            or step >= self.num_steps - 1
            or self.rate is None
            or self.consecutive_skips >= self.policy.max_consecutive_skips
        )

    def computed(self, output_change: float | None) -> None:
        """After a computed step: its output's relative change since the previous computed output."""
        if output_change is not None:
            moved = self.input_change_since_compute
            # An unchanged input with an unchanged output predicts no change; with a changed output, the
            # largest rate seen keeps the next steps computed.
            self.rate = output_change / moved if moved > 0 else (0.0 if output_change == 0 else math.inf)
        self.input_change_since_compute = 0.0

    @property
    def computed_steps(self) -> int:
        return sum(self.decisions)
