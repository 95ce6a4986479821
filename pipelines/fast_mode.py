"""Fast mode: an operator-installed step-distillation LoRA, used only by requests that ask for few steps
without CFG.

The LoRA (e.g. one of the public 4-step Wan 14B distillation LoRAs, in their own non-diffusers key format)
is loaded once, when the worker loads the model, with diffusers' own LoRA loader (WanLoraLoaderMixin, which
converts that format and injects peft LoRA layers into the transformer). It stays unfused: each request
switches its layers on or off, and a request that is not eligible runs with them off, which is the base
layer's own forward (peft's LoraLayer with adapters disabled calls only `base_layer`), so its frames are
bit-identical to a server without the LoRA. Fusing would save the LoRA's extra matmuls (rank r against the
layer's width: ~1% of a 14B forward at rank 64) but unfusing subtracts the product again in bf16, which is
not exact, and keeping a copy of the original weights would double the memory of every adapted layer.
Regional compile (pipelines/compile.py) guards on the layers' enabled flag, so each state is compiled once
per shape and both are then reused (tests/pipelines/test_fast_mode.py runs the toggle under compile).

The rule: fast mode runs when a LoRA is installed, `num_inference_steps <= MAX_STEPS` and
`guidance_scale <= MAX_GUIDANCE` (diffusers' WanVACEPipeline runs CFG exactly when guidance_scale > 1, and
distillation LoRAs are trained without it). It computes every step: a step cache (`acceleration`) would
reuse one of a handful of large distilled steps (pipelines/step_policy.py always computes the first two
and the last, so 4 steps could lose the third).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

ADAPTER_NAME = "fast_mode"
MAX_STEPS = 8
MAX_GUIDANCE = 1.0  # WanVACEPipeline.do_classifier_free_guidance is guidance_scale > 1.0
_ATTR = "_vace_fast_lora"  # where the installed LoRA hangs on the pipeline (as pipelines/memory.py's plan)
log = logging.getLogger(__name__)


class FastLoraError(RuntimeError):
    """The --fast-lora file is missing, unreadable or does not fit the loaded model."""


def eligible(num_inference_steps: int, guidance_scale: float) -> bool:
    """Whether a request qualifies for fast mode (when a LoRA is installed)."""
    return num_inference_steps <= MAX_STEPS and guidance_scale <= MAX_GUIDANCE


def runs_fast(pipe: Any, num_inference_steps: int, guidance_scale: float) -> bool:
    """Whether a request runs in fast mode on `pipe` (a LoRA installed and the request eligible), so with
    no step cache: use_for_request's decision, switching nothing (the memory check reads it)."""
    return installed(pipe) is not None and eligible(num_inference_steps, guidance_scale)


@dataclass
class FastLora:
    """An installed distillation LoRA and whether its layers are on now."""

    path: Path
    strength: float
    layers: int  # peft LoRA layers it added to the transformer
    enabled: bool = False

    def switch(self, transformer: Any, on: bool) -> None:
        """Its layers on or off in `transformer` (peft's enable/disable: unfused, so off is exact)."""
        if on != self.enabled:
            if on:
                transformer.enable_lora()
            else:
                transformer.disable_lora()
            self.enabled = on

    def describe(self, num_inference_steps: int) -> str:
        return (f"fast mode: distillation LoRA {self.path.name} at strength {self.strength:g}, "
                f"{num_inference_steps} steps, no CFG, every step computed (step cache off)")


def installed(pipe: Any) -> FastLora | None:
    return getattr(pipe, _ATTR, None)


def check_fast_lora_file(path: Path, strength: float = 1.0) -> Path:
    """What can be checked before the model loads (seconds, not minutes): the file and the strength."""
    path = Path(path).expanduser()
    if not (math.isfinite(strength) and strength > 0):
        raise FastLoraError(f"--fast-lora-strength must be a positive number, got {strength}")
    if not path.is_file():
        raise FastLoraError(f"--fast-lora {path}: no such file")
    if path.suffix != ".safetensors":
        # Pickled .pt/.bin files can run code when loaded; the public LoRAs ship as safetensors.
        raise FastLoraError(f"--fast-lora {path}: must be a .safetensors file")
    if importlib.util.find_spec("peft") is None:  # diffusers' LoRA loader runs on peft's layers
        raise FastLoraError("--fast-lora needs the peft package: pip install 'peft>=0.17,<0.22' "
                            "(pyproject.toml)")
    return path


def lora_file_params(path: Path) -> int:
    """Parameters the LoRA file holds, from its safetensors header (no tensor is read): what the memory plan
    adds to the transformer when it is chosen before the weights (pipelines/loader.py)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118 - safe_open is no dict


def install_fast_lora(pipe: Any, path: Path, strength: float = 1.0) -> FastLora:
    """Load the LoRA at `path` into `pipe`'s transformer, switched off; raises FastLoraError saying why not.

    Call it before the memory plan and compile are applied, so offload hooks and compiled blocks see the
    LoRA layers from the start.
    """
    path = check_fast_lora_file(path, strength)
    try:
        # diffusers converts the public non-diffusers format (diffusion_model.blocks.N.self_attn.q.lora_down
        # ...) to its own keys here; the converted dict is then loaded as is.
        state_dict = pipe.lora_state_dict(str(path), use_safetensors=True, local_files_only=True)
    except Exception as exc:
        reason = _reason(exc)
        raise FastLoraError(f"--fast-lora {path}: not a LoRA diffusers can read for Wan ({reason})") from exc
    expected = _adapted_modules(state_dict)
    if not expected:
        raise FastLoraError(f"--fast-lora {path}: holds no LoRA weights for the Wan transformer")
    try:
        pipe.load_lora_weights(state_dict, adapter_name=ADAPTER_NAME)
    except Exception as exc:
        raise FastLoraError(f"--fast-lora {path}: does not fit this model ({_reason(exc)})") from exc
    # peft loads what matches and only warns about the rest: a LoRA for another model size or layout
    # would run with some of its layers silently missing.
    missing = sorted(expected - _lora_layers(pipe.transformer), key=_natural)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise FastLoraError(f"--fast-lora {path}: does not fit this model: it adapts {shown}, which the "
                            "transformer does not have")
    pipe.transformer.set_adapters([ADAPTER_NAME], [strength])
    pipe.transformer.disable_lora()
    lora = FastLora(path=path, strength=strength, layers=len(expected))
    setattr(pipe, _ATTR, lora)
    log.info("Fast mode: distillation LoRA %s (%d layers) at strength %g, for requests with "
             "num_inference_steps <= %d and guidance_scale <= %g", path, lora.layers, strength, MAX_STEPS,
             MAX_GUIDANCE)
    return lora


def use_for_request(pipe: Any, num_inference_steps: int, guidance_scale: float,
                    on_log: Callable[[str], None] | None = None) -> bool:
    """Switch the installed LoRA on for an eligible request and off for any other; returns whether this
    request runs in fast mode. Without an installed LoRA: False, nothing logged."""
    lora = installed(pipe)
    if lora is None:
        return False
    fast = runs_fast(pipe, num_inference_steps, guidance_scale)
    lora.switch(pipe.transformer, fast)
    if fast:
        message = lora.describe(num_inference_steps)
    else:
        message = (f"fast mode off: the distillation LoRA is used when num_inference_steps <= {MAX_STEPS} "
                   f"and guidance_scale <= {MAX_GUIDANCE:g} (this request: {num_inference_steps} steps, "
                   f"guidance_scale {guidance_scale:g})")
    log.info(message)
    if on_log is not None:
        on_log(message)
    return fast


@contextmanager
def switched_on(pipe: Any) -> Iterator[bool]:
    """The installed LoRA on for the block (e.g. the compile warm-up of fast mode's graphs), then back as it
    was; yields whether there is one."""
    lora = installed(pipe)
    if lora is None:
        yield False
        return
    was = lora.enabled
    lora.switch(pipe.transformer, True)
    try:
        yield True
    finally:
        lora.switch(pipe.transformer, was)


def _adapted_modules(state_dict: dict[str, Any]) -> set[str]:
    """Transformer module names the (converted) state dict adapts: `transformer.X.lora_A.weight` -> X."""
    modules = set()
    for key in state_dict:
        name, sep, _ = key.removeprefix("transformer.").partition(".lora_")
        if sep and key.startswith("transformer."):
            modules.add(name)
    return modules


def _lora_layers(transformer: nn.Module) -> set[str]:
    """Names of the transformer's modules that hold this adapter (peft's LoRA layers keep lora_A per name)."""
    return {name for name, module in transformer.named_modules()
            if ADAPTER_NAME in getattr(module, "lora_A", {})}


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in name.split(".")]


def _reason(exc: BaseException) -> str:
    # peft's size-mismatch errors run to one line per tensor: the first few say enough.
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
