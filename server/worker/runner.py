"""Turn one job's stored input into an output video. Runs inside a worker process only.

`Executor._generate` reads top to bottom in numbered steps; each step is one call into the module that
owns it: server/contract/endpoints.py (the stored input), tasks.py (what the task does), models.py (the
models it needs and their GPU memory), inputs.py (fetch, probe, decode, fit in time), memory_check.py (the
request's GPU peak against the card), safety.py,
pipelines/generate.py (the diffusers pipeline), publish.py (encode, store, fal's output).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines.generate import GenerationCancelled, GenerationRequest, generate
from pipelines.request_memory import GpuMemory, RequestFit, read_gpu_memory, request_memory
from pipelines.schedulers import default_flow_shift
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from preprocessors.interpolation.timeline import Timeline
from preprocessors.keyframes import FrameImage, paste_frame_images, place_frame_images
from preprocessors.sizing import pipeline_num_frames, target_size
from preprocessors.temporal import fit_length
from server.contract.endpoints import canonical_input
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits
from server.files.store import FileStore
from server.jobs.model import Job
from server.worker.fetch import Fetcher
from server.worker.frame_images import read_frame_images
from server.worker.inputs import InputReader, fit_input, with_concrete_resolution
from server.worker.memory_check import RequestLength, check_request_memory, request_shape
from server.worker.models import (
    RequestModels,
    free_gpu_for_generation,
    load_interpolator,
    load_models,
    reload_after_generation,
)
from server.worker.previews import PhasedFetcher, Previews, latent_preview_for
from server.worker.publish import publish
from server.worker.reference_input import reference_input
from server.worker.safety import check_safety
from server.worker.tasks import TaskContext, TaskPlan, plan_for_request
from server.worker.types import Conditioned, FittedInput, Generated, JobHooks, SizeRule, Timing

if TYPE_CHECKING:
    from diffusers import WanVACEPipeline

    from pipelines.preview import LatentPreview

GenerateFn = Callable[..., np.ndarray]  # pipelines/generate.py's generate() or a stand-in of that signature

__all__ = ["Executor", "Generated", "JobHooks", "Timing"]
INTERPOLATION_BATCH = 16  # frame pairs per progress report


class Executor:
    def __init__(self, pipe: WanVACEPipeline, fetcher: Fetcher, files: FileStore, work_dir: Path,
                 sizes: SizeRule = target_size, annotators: Annotators | None = None,
                 limits: InputLimits | None = None) -> None:
        self.pipe = pipe
        self.fetcher = fetcher
        self.files = files
        self.work_dir = work_dir
        # Tests swap in a rule with tiny sizes; the server always uses fal's presets.
        self.sizes = sizes
        # Without a registry every annotator is "not installed" (the safety checker then follows its policy).
        self.annotators = annotators or Annotators(AnnotatorConfig(root=None))
        self.limits = limits or InputLimits()
        # A worker group's rank 0 swaps in its group-wide generate (server/worker/group.py).
        self.generate: GenerateFn = generate
        self.latent_preview: LatentPreview | None = None  # fitted across this worker's jobs
        # The card's memory as the per-request check reads it; None on a CPU worker (nothing to check).
        self.gpu_memory: Callable[[Any], GpuMemory | None] = read_gpu_memory

    def _preview_fit(self, hooks: JobHooks) -> LatentPreview | None:
        if hooks.preview_every <= 0 or hooks.store_preview is None:
            return None
        if self.latent_preview is None:
            self.latent_preview = latent_preview_for(self.pipe)
        return self.latent_preview

    def run(self, job: Job, hooks: JobHooks) -> dict[str, Any]:
        """Generate, encode to H.264 and store; returns fal's output dict."""
        scratch = self.work_dir / job.id
        try:
            generated = self._generate(job, hooks, scratch)
            with hooks.progress.phase("encode"):
                output = publish(self.files, job.id, generated, canonical_input(job.endpoint, job.input),
                                 scratch, hooks)
            hooks.progress.finish()
            return output
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def generate_frames(self, job: Job, hooks: JobHooks) -> Generated:
        """Everything `run` does except encoding and storing: the frames as they would be encoded."""
        scratch = self.work_dir / job.id
        try:
            return self._generate(job, hooks, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _generate(self, job: Job, hooks: JobHooks, scratch: Path) -> Generated:
        # 1. The request as the API stored it (validated, defaults filled, task resolved); its task's plan.
        request = canonical_input(job.endpoint, job.input)
        plan = plan_for_request(request)
        seed = _stored_seed(request)

        progress = hooks.progress

        # 2. The models it needs beyond the pipeline; a missing one fails here, before any work.
        with progress.phase("load"):
            models = load_models(plan, request, self.annotators, hooks)

        # 3. Inputs, fitted to the output fps and length (the size depends on the task); reframe's temporal
        #    downsampling keeps every (d+1)-th frame for generation.
        reader = InputReader(PhasedFetcher(self.fetcher, progress), self.limits, scratch,
                             should_cancel=hooks.should_cancel)
        with progress.phase("fetch"):  # PhasedFetcher moves it to "probe" after each download
            fitted = (fit_input(reader, request, plan, self.sizes) if request.video_url is not None
                      else reference_input(reader, request, plan, hooks))
        request = with_concrete_resolution(request, fitted.info)
        _check_cancel(hooks)

        # 3b. This request's own GPU peak against the card, before any GPU work: the cheapest fix, or a 422.
        info = fitted.info
        fit = self._fit_memory(request, fitted, *self.sizes(request.resolution, request.aspect_ratio,
                                                            info.width, info.height), hooks)

        # 4. The inputs' safety, then the prompt (expanded if asked).
        if models.checker is not None:
            with progress.phase("input_safety"):
                _check_inputs_safety(models, fitted, hooks)
        if models.expander is not None:
            with progress.phase("prompt"):
                prompt = _prompt(models, request, plan, hooks)
        else:
            prompt = request.prompt
        _check_cancel(hooks)

        # 5. The task's conditioning at the generation size and the pipeline's 4k+1 length.
        with progress.phase("annotate", plan.name):
            conditioned = self._condition(plan, request, fitted, reader, models, hooks)
            frame_images = self._frame_images(request, fitted, conditioned, reader, hooks)
        _check_cancel(hooks)

        # 6. Generation, with the GPU memory the annotators hold freed first under offloading plans.
        shift = request.shift if request.shift is not None else default_flow_shift(request.resolution)
        generation = GenerationRequest(
            prompt=prompt, negative_prompt=request.negative_prompt,
            video=conditioned.conditioning.video, mask=conditioned.conditioning.mask,
            reference_images=fitted.references, width=conditioned.width, height=conditioned.height,
            num_inference_steps=request.num_inference_steps,
            # Any int is a valid seed in the schema; torch's generator takes 64 bits.
            guidance_scale=request.guidance_scale, seed=seed % 2**32,
            sampler=request.sampler, flow_shift=shift,
            acceleration=request.acceleration,
        )
        hooks.log(f"Sampler {request.sampler}, flow shift {shift:g}")
        # The exact size is known now (outpainting's canvas, reframe's aspect): checked again, still before
        # any VAE or denoising work.
        fit = self._fit_memory(request, fitted, conditioned.width, conditioned.height, hooks, fit)
        models = free_gpu_for_generation(self.pipe, models, self.annotators, hooks,
                                         drop=fit is not None and fit.offload_annotators)
        previews = Previews.for_job(self._preview_fit(hooks), hooks, job.id)
        try:
            with request_memory(self.pipe, fit):
                output = self.generate(self.pipe, generation, on_step=progress.denoise_step,
                                       should_cancel=hooks.should_cancel, on_log=hooks.log,
                                       on_phase=progress.enter,
                                       on_encode=previews.observe if previews else None,
                                       on_latents=previews.publish if previews else None,
                                       latents_every=hooks.preview_every if previews else 0,
                                       on_forwards=progress.count_forwards)
        except BaseException:
            progress.close("stopped")
            raise
        progress.close()
        models = reload_after_generation(models, request, self.annotators)

        # 7. Trim the 4k+1 padding away; the task's post-processing (paste-back) on the generated frames, so
        #    interpolated in-betweens blend pasted pixels; then interpolate (reframe's temporal factors).
        output = plan.post_process(request, output[: fitted.generated.num_frames], conditioned)
        output = paste_frame_images(output, frame_images)
        if fitted.timeline.factor:
            with progress.phase("interpolate"):
                output = _interpolate(models, request, self.annotators, fitted.timeline, output, hooks)

        # 8. What leaves the server is checked too.
        if models.checker is not None:
            with progress.phase("safety"):
                check_safety(models.checker, output, None, "generated video", hooks)
        out_timing = Timing(fps=fitted.timeline.output_fps, num_frames=fitted.timeline.output_frames)
        return Generated(task=plan.name, frames=output, timing=out_timing, prompt=prompt, seed=seed)

    def _condition(self, plan: TaskPlan, request: WanVACEInput, fitted: FittedInput, reader: InputReader,
                   models: RequestModels, hooks: JobHooks) -> Conditioned:
        generated = fitted.generated
        frames = fit_length(fitted.frames, pipeline_num_frames(generated.num_frames))
        context = TaskContext(sizes=self.sizes, reader=reader, control=models.control, hooks=hooks,
                              tracker=models.tracker)
        conditioned = plan.condition(request, frames, generated, context)
        info, timing, timeline = fitted.info, fitted.timing, fitted.timeline
        size = f"{conditioned.width}x{conditioned.height}"
        hooks.log(f"Input {info.width}x{info.height} @ {info.fps:g} fps, {info.num_frames} frames -> "
                  f"{size} @ {timing.fps:g} fps, {timing.num_frames} frames")
        if timeline.factor:
            hooks.log(f"Generating every {timeline.keep_every} frame(s): {generated.num_frames} frames at "
                      f"{generated.fps:g} fps, then {request.interpolator_model} adds {timeline.factor} "
                      f"between each pair: {timeline.output_frames} frames at {timeline.output_fps:g} fps")
        return conditioned

    def _fit_memory(self, request: WanVACEInput, fitted: FittedInput, width: int, height: int,
                    hooks: JobHooks, previous: RequestFit | None = None) -> RequestFit | None:
        """pipelines/request_memory.py's decision for this request at `width` x `height`, logged when it is
        new; raises InputError (a 422) when nothing fits. A no-op on a CPU worker."""
        gpu = self.gpu_memory(self.pipe)
        if gpu is None:
            return None
        frames = pipeline_num_frames(fitted.generated.num_frames)
        shape = request_shape(self.pipe, request, width, height, frames, len(fitted.references))
        timeline = fitted.timeline
        length = RequestLength(timeline.num_frames, timeline.downsample, timeline.fps,
                               follows_input=request.video_url is not None and request.match_input_num_frames)
        info = fitted.info

        def size_at(preset: str) -> tuple[int, int]:
            return self.sizes(preset, request.aspect_ratio, info.width, info.height)

        # A refusal raises InputError here: the worker loop writes its message to the job's logs as an ERROR.
        fit = check_request_memory(self.pipe, gpu, request, shape, size_at, self.annotators.gpu_bytes(),
                                   length)
        if fit is not None and (previous is None or fit.fixes != previous.fixes):
            hooks.log(f"GPU memory for {width}x{height} x {frames} frames: {fit.describe()}")
        return fit

    @staticmethod
    def _frame_images(request: WanVACEInput, fitted: FittedInput, conditioned: Conditioned,
                      reader: InputReader, hooks: JobHooks) -> list[FrameImage]:
        """first_frame_url / last_frame_url placed as kept frames of the conditioning."""
        images = read_frame_images(request, reader, fitted.generated.num_frames, conditioned.width,
                                   conditioned.height)
        if images:
            place_frame_images(conditioned.conditioning, conditioned.source, images)
            hooks.log(f"Kept frame(s) {', '.join(str(i.index) for i in images)} from first/last_frame_url "
                      f"(transparency_mode {request.transparency_mode})")
        return images


def _check_inputs_safety(models: RequestModels, fitted: FittedInput, hooks: JobHooks) -> None:
    if models.checker is None:
        return
    check_safety(models.checker, fitted.frames, "video_url", "input video", hooks)
    for image in fitted.references:
        check_safety(models.checker, image[None], "ref_image_urls", "reference image", hooks)


def _prompt(models: RequestModels, request: WanVACEInput, plan: TaskPlan, hooks: JobHooks) -> str:
    if models.expander is None:
        return request.prompt
    prompt = models.expander.expand_prompt(request.prompt, plan.name)
    hooks.log(f"Expanded prompt: {prompt}")
    return prompt


def _interpolate(models: RequestModels, request: WanVACEInput, annotators: Annotators, timeline: Timeline,
                 output: np.ndarray, hooks: JobHooks) -> np.ndarray:
    """The in-betweens of a timeline with temporal factors; other timelines' frames are the output."""
    if not timeline.factor:
        return output
    if models.interpolator is None:  # auto downsampling chose a factor only once the input's fps was known
        models.interpolator = load_interpolator(request, annotators)
    _check_cancel(hooks)
    started = time.monotonic()
    # In batches of frame pairs, so progress (and cancellation) reach inside a phase that takes minutes on
    # long outputs; each in-between depends on its pair only, so the joined result is the same.
    pieces = [output[:1]]
    pairs = len(output) - 1
    for start in range(0, pairs, INTERPOLATION_BATCH):
        stop = min(start + INTERPOLATION_BATCH, pairs)
        pieces.append(models.interpolator.interpolate(output[start:stop + 1], timeline.factor)[1:])
        hooks.progress.inner(stop, pairs)
        _check_cancel(hooks)
    output = np.concatenate(pieces)[: timeline.output_frames]
    hooks.log(f"Interpolated to {len(output)} frames in {time.monotonic() - started:.1f}s")
    return output


def _stored_seed(request: WanVACEInput) -> int:
    # The API chooses a seed at submit when the request has none (server/contract/endpoints.py).
    if request.seed is None:
        raise ValueError("the stored input has no seed")
    return request.seed


def _check_cancel(hooks: JobHooks) -> None:
    if hooks.should_cancel():
        raise GenerationCancelled()
