"""The models a request needs beyond the pipeline, and their GPU choreography around generation.

Everything is loaded before any work, so a model the operator has not installed fails the job at once with
a 422 naming `vace download --annotators`. Under an offloading memory plan (pipelines/memory.py), or when
a request's memory check needs their room (memory_check.py), the 14B model needs the GPU memory the
annotators hold: they are dropped before denoising and the ones still needed are loaded again after it,
from local files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pipelines.memory import Offload, plan_of
from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.protocols import MaskTracker, SupportsPromptExpansion, SupportsSafetyCheck
from preprocessors.annotators.registry import Annotators, ControlAnnotator
from preprocessors.interpolation.base import Interpolator
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.worker.tasks import TaskPlan
from server.worker.types import JobHooks, Timing

if TYPE_CHECKING:
    from diffusers import WanVACEPipeline

NOT_INSTALLED = "feature_not_supported"
_Model = TypeVar("_Model")


@dataclass
class RequestModels:
    """What one request needs beyond the pipeline; None where it needs nothing."""

    control: ControlAnnotator | None = None  # depth/pose with preprocess
    interpolator: Interpolator | None = None  # a timeline with temporal factors
    checker: SupportsSafetyCheck | None = None  # enable_safety_checker (None also when missing and allowed)
    expander: SupportsPromptExpansion | None = None  # enable_prompt_expansion
    tracker: MaskTracker | None = None  # inpainting's mask_image_url under VACE_MASK_TRACKING=track
    # Dropped to free GPU memory for generation, to be loaded again after it.
    reload_interpolator: bool = False
    reload_checker: bool = False


def load_models(plan: TaskPlan, request: WanVACEInput, annotators: Annotators,
                hooks: JobHooks) -> RequestModels:
    models = RequestModels()
    if plan.wants_control(request):
        hooks.log(f"Loading the {plan.name} annotator")
        models.control = _require(lambda: plan.load_control(annotators), "preprocess",
                                  f"preprocess=true ({plan.name})")
    if plan.wants_tracker(request) and annotators.config.mask_tracking == "track":
        hooks.log("Loading the mask tracker")
        models.tracker = _require(annotators.tracker, "mask_image_url",
                                  "mask_image_url (tracked through the video; an operator can set "
                                  "VACE_MASK_TRACKING=static to apply it to every frame unchanged)")
    if plan.timeline(request, Timing(16.0, 1)).factor:  # explicit factors; auto ones load later
        models.interpolator = load_interpolator(request, annotators)
    if request.enable_prompt_expansion:
        models.expander = _require(annotators.prompt_expander, "enable_prompt_expansion",
                                   "enable_prompt_expansion=true")
    if request.enable_safety_checker:
        try:
            models.checker = annotators.safety()
        except AnnotatorNotFoundError as exc:
            if annotators.config.safety_missing == "refuse":
                raise InputError(
                    "enable_safety_checker",
                    f"enable_safety_checker=true, but this server has no safety checker ({exc})",
                    NOT_INSTALLED,
                ) from exc
            hooks.warning(f"Safety checker not installed, running unchecked ({exc})")
    return models


def load_interpolator(request: WanVACEInput, annotators: Annotators) -> Interpolator:
    name = request.interpolator_model
    return _require(lambda: annotators.interpolator(name), "interpolator_model",
                    f"interpolation with interpolator_model={name}")


def free_gpu_for_generation(pipe: WanVACEPipeline, models: RequestModels, annotators: Annotators,
                            hooks: JobHooks, *, drop: bool = False) -> RequestModels:
    """Under an offloading memory plan, or when this request's memory check needs their room (`drop`,
    pipelines/request_memory.py), drop the annotators (a no-op on a CPU worker) and this job's references
    to them, or nothing would be freed; returns what to load again after generation."""
    if plan_of(pipe).offload is Offload.ALL_ON_GPU and not drop:
        return models
    after = RequestModels(reload_interpolator=models.interpolator is not None,
                          reload_checker=models.checker is not None)
    # This job's references go first: offload() empties torch's cache, which only returns memory whose
    # tensors are already unreferenced.
    models.control = models.interpolator = models.checker = models.expander = models.tracker = None
    dropped = annotators.offload()
    if dropped:
        hooks.log(f"Freed the GPU memory of {', '.join(dropped)} for generation")
    return after


def reload_after_generation(models: RequestModels, request: WanVACEInput,
                            annotators: Annotators) -> RequestModels:
    if models.reload_interpolator:
        models.interpolator = annotators.interpolator(request.interpolator_model)
    if models.reload_checker:
        models.checker = annotators.safety()
    return models


def _require(load: Callable[[], _Model], field_name: str, feature: str) -> _Model:
    """Load a model the request asked for; a missing one is a clear error naming the download command."""
    try:
        return load()
    except AnnotatorNotFoundError as exc:
        raise InputError(field_name, f"{feature} needs a model this server has not installed: {exc}",
                         NOT_INSTALLED) from exc
