"""Fast mode's cost per forward: the unfused distillation LoRA on and off, eager and under regional compile.

    python -m benchmarks.fast_lora [--shape 720p] [--rank 64] [--no-compile] [--out benchmarks/results]
    python -m benchmarks.fast_lora --tiny            # the same code on a toy model, on a CPU, in seconds

Builds the 14B VACE transformer with random weights directly on the GPU (pipelines/bench/models.py; speed
does not depend on weight values), writes a random LoRA of `--rank` over its 40 main blocks in the public
Wan file format (tests/pipelines/wan_lora_file.py), installs it with the server's own code
(pipelines/fast_mode.py: diffusers' load_lora_weights), and times one forward at the shape with no LoRA,
with the LoRA installed but off, and with it on; then the same two states under regional compile (first
call = compile, then steady). It checks that "off" gives the no-LoRA output bit for bit, prints the
figures and the projected transformer time of a 4-step fast job (4 forwards, no CFG) against a 30-step job
with CFG (60 forwards), and writes JSON with the device, versions and date under `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipelines.bench.environment import describe, slug
from pipelines.bench.measure import median_seconds, seconds, sig, weight_gib
from pipelines.bench.models import ModelSet, build_transformer, transformer_inputs
from pipelines.compile import compile_blocks
from pipelines.fast_mode import install_fast_lora, use_for_request
from tests.pipelines.wan_lora_file import write_wan_lora

FAST_STEPS, FULL_FORWARDS = 4, 60


def _bare_pipeline(transformer: torch.nn.Module) -> Any:
    """A WanVACEPipeline holding only the transformer: what diffusers' LoRA loader needs."""
    from diffusers import WanVACEPipeline

    return WanVACEPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                           transformer=transformer)


def run(tiny: bool, shape_label: str, rank: int, compile_too: bool, reps: int) -> dict[str, Any]:
    device = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = ModelSet.choose(tiny)
    shape = models.shape(shape_label)
    figures: dict[str, Any] = {"shape": shape.as_dict() | {"label": shape.label}, "rank": rank}
    build_s, transformer = seconds(lambda: build_transformer(models.transformer, device, dtype), device)
    figures["build_s"] = sig(build_s)
    inputs = transformer_inputs(models, shape, device, dtype)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return transformer(**inputs)[0]

    def timed(name: str, warmup: int = 1) -> torch.Tensor:
        figures[f"forward_{name}_s"] = sig(median_seconds(forward, device, reps=reps, warmup=warmup))
        print(f"forward, {name}: {figures[f'forward_{name}_s']} s", flush=True)
        return forward()

    reference = timed("no_lora")
    pipe = _bare_pipeline(transformer)
    with tempfile.TemporaryDirectory() as folder:
        path = write_wan_lora(Path(folder) / "distill.safetensors", transformer, rank=rank)
        figures["lora_file_mib"] = sig(path.stat().st_size / 2**20)
        install_s, lora = seconds(lambda: install_fast_lora(pipe, path), device)
    lora_bytes = sum(p.numel() * p.element_size() for n, p in transformer.named_parameters() if "lora_" in n)
    figures |= {"install_s": sig(install_s), "lora_layers": lora.layers,
                "lora_weights_gib": sig(lora_bytes / 2**30),
                "transformer_weights_gib": sig(weight_gib(transformer))}
    figures["off_equals_no_lora"] = bool(torch.equal(timed("lora_off"), reference))
    use_for_request(pipe, FAST_STEPS, 1.0)
    timed("lora_on")
    figures["lora_overhead"] = sig(figures["forward_lora_on_s"] / figures["forward_no_lora_s"] - 1)
    best = figures["forward_lora_on_s"]
    if compile_too:
        compile_blocks(transformer)
        for name, steps, guidance in (("compiled_lora_on", FAST_STEPS, 1.0), ("compiled_lora_off", 30, 5.0)):
            use_for_request(pipe, steps, guidance)
            first_s, _ = seconds(forward, device)  # compiles this state's graph
            figures[f"forward_{name}_first_call_s"] = sig(first_s)
            out = timed(name, warmup=0)
            if name == "compiled_lora_off":
                difference = float((out - reference).abs().max())
                figures["compiled_off_max_abs_diff_vs_eager_no_lora"] = sig(difference)
        best = figures["forward_compiled_lora_on_s"]
    figures["projected_fast_job_transformer_s"] = sig(FAST_STEPS * best)
    figures["projected_30_step_cfg_job_transformer_s"] = sig(FULL_FORWARDS * figures["forward_no_lora_s"])
    return {"device": describe(device), "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fast_lora",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy model on the CPU (CI)")
    parser.add_argument("--shape", default="720p", choices=["480p", "720p"])
    parser.add_argument("--rank", type=int, default=64, help="the public 4-step LoRAs are rank 32 or 64")
    parser.add_argument("--no-compile", action="store_true", help="skip the regional-compile timings")
    parser.add_argument("--reps", type=int, default=1, help="timed forwards per figure (median)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H%MZ", time.gmtime())
    result = run(args.tiny, args.shape, args.rank, not args.no_compile, args.reps)
    command = " ".join(["python -m benchmarks.fast_lora", *(sys.argv[1:] if argv is None else argv)])
    result |= {"date": started, "command": command}
    print(json.dumps(result["figures"], indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "tiny" if args.tiny else slug(result["device"].get("name", "device"))
    path = args.out / f"fast_lora_{name}_{started}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
