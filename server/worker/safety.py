"""The safety checker's verdict on a video or image, turned into fal's content-policy error when flagged.

The runner checks the fitted input and each reference image before generation, and the output before it
is stored (README.md, "Safety checker").
"""

from __future__ import annotations

import numpy as np

from preprocessors.annotators.protocols import SupportsSafetyCheck
from server.contract.errors import InputError
from server.worker.types import JobHooks

SAFETY_SAMPLE = 8  # frames the safety checker looks at, evenly spaced, first and last included
CONTENT_POLICY = "content_policy_violation"


def check_safety(checker: SupportsSafetyCheck, frames: np.ndarray, field_name: str | None, what: str,
                 hooks: JobHooks) -> None:
    """`field_name` None: the output (nothing is returned); else the input field that was flagged."""
    verdict = checker.check_frames(frames, sample=SAFETY_SAMPLE)
    hooks.log(f"Safety check of the {what}: NSFW score {verdict.score:.3f} (frame {verdict.frame_index})")
    if verdict.flagged:
        raise InputError(
            field_name,
            f"The {what} was flagged by the safety checker (NSFW score {verdict.score:.2f} at frame "
            f"{verdict.frame_index}); " + ("nothing was generated." if field_name else "it is not returned."),
            CONTENT_POLICY,
            {"stage": "input" if field_name else "output", "nsfw_score": round(verdict.score, 4),
             "frame_index": verdict.frame_index},
        )
