"""A step cache for WanVACETransformer3DModel that skips the main and VACE blocks together.

Why not diffusers' own caches: FirstBlockCache and MagCache (diffusers/hooks/first_block_cache.py,
mag_cache.py) cache residuals of the main blocks only, while the model's forward adds the 8 VACE hints
between those blocks (diffusers/models/transformers/transformer_wan_vace.py): on a hit the hints are added
a second time (a 29.5% output error on a toy model, against 5e-8 with the hints scaled to 0). Here the cached
unit is the whole body: everything between the patch embedding and the output norm, VACE blocks and hints
included.

How: while installed, the transformer's forward is wrapped. A computed call runs the model unchanged and two
hooks record its body residual (the output norm's input minus the patch embedding's output), one per CFG
branch (cond and uncond are called in turn each step, pipeline_wan_vace.py). A reused call runs the model's
own forward with both block lists emptied, so only the embeddings and the output head run, and the output
norm's input (then the body's input) gets the branch's residual added. pipelines/step_policy.py decides per
step.
Regional compile (pipelines/compile.py) compiles the blocks themselves, so it composes: a reused step calls
no block, compiled or not. Under context parallelism (pipelines/context_parallel.py) the body's output is
this rank's part of the tokens while its input is whole: residuals are kept per rank, for its own tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipelines.context_parallel import token_shard
from pipelines.step_policy import CachePolicy, StepDecider


@dataclass(frozen=True)
class CacheStats:
    steps: int
    computed_steps: int
    forwards_computed: int
    forwards_skipped: int
    reused_steps: tuple[int, ...]  # counted from 1, as the per-step progress lines count them

    def summary(self) -> str:
        total = self.forwards_computed + self.forwards_skipped
        reused = f", reused steps {', '.join(map(str, self.reused_steps))}" if self.reused_steps else ""
        return (f"step cache: {self.computed_steps} of {self.steps} steps computed "
                f"({self.forwards_computed} of {total} transformer forwards{reused})")


def relative_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """Mean absolute change over mean magnitude (relative L1), in float32."""
    scale = old.float().abs().mean()
    return float((new.float() - old.float()).abs().mean() / scale.clamp_min(1e-12))


class StepCache:
    """Installed on a transformer for one generation: `with StepCache(...) as cache:`; call `end_step()` after
    each denoising step (generate() does it from the step callback)."""

    def __init__(self, transformer: nn.Module, policy: CachePolicy, num_steps: int) -> None:
        self.transformer = transformer
        self.decider = StepDecider(policy, num_steps)
        self.num_steps = num_steps
        self.forwards_computed = 0
        self.forwards_skipped = 0
        self._step = 0
        self._branch = 0  # calls so far in this step: 0 = cond, 1 = uncond
        self._compute_step = True
        self._reusing: int | None = None  # the branch whose residual the running call adds
        self._running: int | None = None  # the branch a computed call records
        self._body_input: torch.Tensor | None = None
        self._residuals: dict[int, torch.Tensor] = {}
        self._last_input: torch.Tensor | None = None
        self._last_output: torch.Tensor | None = None
        self._saved_forward: Any = None
        self._installed: Any = None
        self._handles: list[Any] = []

    # --- installation -----------------------------------------------------------------------------------

    def __enter__(self) -> StepCache:
        model = self.transformer
        # accelerate's offload hooks may have replaced forward on the instance: wrap whatever is there.
        self._saved_forward = model.__dict__.get("forward")
        self._original = model.forward
        self._installed = self._forward  # one bound method, so it can be told apart from a replacement
        model.forward = self._installed
        self._handles = [
            model.patch_embedding.register_forward_hook(self._record_body_input),
            model.norm_out.register_forward_pre_hook(self._at_body_output),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        if self._saved_forward is None:
            del self.transformer.forward
        else:
            self.transformer.forward = self._saved_forward
        self._residuals.clear()
        self._body_input = self._last_input = self._last_output = None

    def end_step(self) -> None:
        self._step += 1
        self._branch = 0

    def drop_branch(self, branch: int) -> None:
        """Free a branch's residual that no later call reads (CFG truncation ends the unconditional calls)."""
        self._residuals.pop(branch, None)

    @property
    def stats(self) -> CacheStats:
        reused = tuple(step + 1 for step, computed in enumerate(self.decider.decisions) if not computed)
        return CacheStats(self.num_steps, self.decider.computed_steps, self.forwards_computed,
                          self.forwards_skipped, reused)

    # --- the wrapped forward --------------------------------------------------------------------------

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        branch = self._branch
        self._branch += 1
        latents = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if branch == 0:
            change = None if self._last_input is None else relative_change(latents, self._last_input)
            self._last_input = latents
            self._compute_step = self.decider.decide(self._step, change)
        if self._compute_step or branch not in self._residuals:
            return self._compute(branch, args, kwargs)
        self.forwards_skipped += 1
        self._reusing = branch
        try:
            with _without_blocks(self.transformer):
                return self._original(*args, **kwargs)
        finally:
            self._reusing = None
            self._stay_installed()

    def _compute(self, branch: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.forwards_computed += 1
        self._running = branch
        self._residuals.pop(branch, None)  # not held twice while its successor is computed
        try:
            out = self._original(*args, **kwargs)
        finally:
            self._running = None
            self._body_input = None
            self._stay_installed()
        if branch == 0 and self._compute_step:
            sample = out[0]  # a tuple or a Transformer2DModelOutput; either indexes to the sample
            change = None if self._last_output is None else relative_change(sample, self._last_output)
            self.decider.computed(change)
            self._last_output = sample
        return out

    def _stay_installed(self) -> None:
        """Re-wrap if a hook replaced the model's forward during the call.

        diffusers' group offload with streams (use_stream=True) adds a prefetch hook that removes itself
        after the model's first forward and writes its predecessor back as `forward`, over this wrapper:
        without this, the first job under group or sequential offload would run uncached from its second
        call on. What is there now is what this cache wraps and what __exit__ restores.
        """
        model = self.transformer
        if model.__dict__.get("forward") is not self._installed:
            self._saved_forward = model.__dict__.get("forward")
            self._original = model.forward
            model.forward = self._installed

    # --- hooks ------------------------------------------------------------------------------------------

    def _record_body_input(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if self._running is not None:
            # The model flattens the patch embedding to tokens in exactly this way before the blocks.
            self._body_input = output.flatten(2).transpose(1, 2)

    def _at_body_output(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        # The model calls norm_out(body_output.float()); its input is the body's output in float32.
        (body_out, *rest) = args
        shard = token_shard(self.transformer)  # the identity unless the body's tokens are split over ranks
        if self._reusing is not None:
            # The blocks were skipped, so body_out is the body's input (whole: no block split it).
            return (shard(body_out) + self._residuals[self._reusing].float(), *rest)
        if self._running is not None and self._body_input is not None:
            residual = body_out - shard(self._body_input).float()
            self._residuals[self._running] = residual.to(self._body_input.dtype)
        return None


@contextmanager
def _without_blocks(model: nn.Module) -> Iterator[None]:
    """The model's forward with empty block lists: no VACE hint is computed or added, no block runs."""
    blocks, vace_blocks = model.blocks, model.vace_blocks
    model.blocks, model.vace_blocks = nn.ModuleList(), nn.ModuleList()
    try:
        yield
    finally:
        model.blocks, model.vace_blocks = blocks, vace_blocks

