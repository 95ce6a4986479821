"""One fresh scheduler per request: fal's `sampler` names and the flow shift, built from the loaded config.

The loaded pipeline's scheduler is shared by every job a worker runs, so it is never modified: each
generation gets its own instance built from that scheduler's config (schedulers are stateful anyway).
"""

from __future__ import annotations

from typing import Any

from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

SAMPLERS = ("unipc", "dpm++", "euler")
_FLOW_KEYS = ("prediction_type", "use_flow_sigmas", "flow_shift")

# Flow shift when the request sets none. diffusers' Wan examples: "5.0 for 720P, 3.0 for 480P" (and lower
# shift for lower resolution). 580p lies between those anchors, so it gets the midpoint.
DEFAULT_FLOW_SHIFT: dict[str, float] = {
    "240p": 3.0,
    "360p": 3.0,
    "480p": 3.0,
    "580p": 4.0,
    "720p": 5.0,
}


def default_flow_shift(resolution: str) -> float:
    try:
        return DEFAULT_FLOW_SHIFT[resolution]
    except KeyError:
        choices = ", ".join(DEFAULT_FLOW_SHIFT)
        raise ValueError(f"unknown resolution {resolution!r}; expected one of: {choices}") from None


def build_scheduler(base_config: Any, sampler: str, flow_shift: float) -> Any:
    """A new scheduler for `sampler` with `flow_shift`; everything else comes from `base_config` (the loaded
    scheduler's config)."""
    if not flow_shift > 0:
        raise ValueError(f"flow_shift must be positive, got {flow_shift}")
    if sampler == "euler":
        # Flow-matching Euler takes the shift as `shift` and has no flow flags (dropped to avoid a warning).
        config = {k: v for k, v in dict(base_config).items() if k not in _FLOW_KEYS}
        return FlowMatchEulerDiscreteScheduler.from_config(
            config, shift=flow_shift, use_dynamic_shifting=False
        )
    flow = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": flow_shift}
    if sampler == "unipc":
        return UniPCMultistepScheduler.from_config(base_config, **flow)
    if sampler == "dpm++":
        return DPMSolverMultistepScheduler.from_config(base_config, algorithm_type="dpmsolver++", **flow)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of: {', '.join(SAMPLERS)}")
