"""The step cache's per-step decision (pipelines/step_policy.py), without a model."""

import math

import pytest

from pipelines.step_policy import ACCELERATIONS, POLICIES, CachePolicy, StepDecider, policy_for
from server.contract.fields import ACCELERATIONS as CONTRACT_ACCELERATIONS


def run(policy: CachePolicy, steps: int, input_change: float = 0.01, rate: float = 0.1) -> list[bool]:
    """Decisions for a run whose input moves by `input_change` each step and whose output moves `rate` times
    as much as its input (`rate` alone when the input does not move)."""
    decider = StepDecider(policy, steps)
    moved = 0.0
    for step in range(steps):
        moved += 0.0 if step == 0 else input_change
        if decider.decide(step, None if step == 0 else input_change):
            decider.computed(None if step == 0 else rate * (moved or 1.0))
            moved = 0.0
    return decider.decisions


def test_choices_match_the_contract() -> None:
    assert ACCELERATIONS == CONTRACT_ACCELERATIONS == ("none", "low", "regular")
    assert policy_for("none") is None
    assert policy_for("regular") is POLICIES["regular"]
    with pytest.raises(ValueError, match="acceleration must be one of none, low, regular"):
        policy_for("fast")


def test_regular_skips_more_than_low() -> None:
    low, regular = run(POLICIES["low"], 30), run(POLICIES["regular"], 30)
    assert sum(regular) < sum(low) < 30


def test_warmup_and_last_step_are_always_computed() -> None:
    policy = CachePolicy(threshold=math.inf, warmup_fraction=0.2, max_consecutive_skips=100)
    decisions = run(policy, 20)
    assert decisions[:4] == [True] * 4 and decisions[-1] is True
    assert decisions[4:-1] == [False] * 15  # an infinite threshold skips everything else


def test_at_least_two_warmup_steps() -> None:
    policy = CachePolicy(threshold=math.inf, warmup_fraction=0.0, max_consecutive_skips=100)
    assert run(policy, 6) == [True, True, False, False, False, True]


def test_consecutive_skips_are_bounded() -> None:
    policy = CachePolicy(threshold=math.inf, warmup_fraction=0.0, max_consecutive_skips=2)
    assert run(policy, 9) == [True, True, False, False, True, False, False, True, True]


def test_zero_threshold_computes_every_step() -> None:
    policy = CachePolicy(threshold=0.0, warmup_fraction=0.0, max_consecutive_skips=100)
    assert all(run(policy, 30, input_change=0.0, rate=0.0))


def test_threshold_accumulates_estimated_output_change() -> None:
    # Each skipped step adds rate 0.1 x input change 0.01 = 0.001: two fit under 0.0025, a third does not.
    policy = CachePolicy(threshold=0.0025, warmup_fraction=0.0, max_consecutive_skips=100)
    assert run(policy, 10) == [True, True, False, False, True, False, False, True, False, True]


def test_a_changed_output_for_an_unchanged_input_keeps_computing() -> None:
    policy = CachePolicy(threshold=1.0, warmup_fraction=0.0, max_consecutive_skips=100)
    assert all(run(policy, 6, input_change=0.0, rate=0.5))
