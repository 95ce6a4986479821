"""Projected job times from the measured phases, and the table printed at the end (torch-free)."""

from __future__ import annotations

from typing import Any

STEPS = 30  # the server's default num_inference_steps (fal's schema default)
FORWARDS_PER_STEP = 2  # classifier-free guidance: a conditional and an unconditional pass
# VACE encodes its two conditioning streams (inactive and reactive) and decodes once; the all-zero stream is
# cached for depth/pose (pipelines/vae_cache.py), so 2 encodes is the worst case, as projected here.
VAE_ENCODES = 2
# Forwards one 30-step job computes per `acceleration` mode, for the projections against the targets.
# The step cache's real hit rate needs real weights (random ones say nothing about how latents evolve), so
# `regular` assumes half the forwards computed: the low end of the 2.0-3.2x that TeaCache and MagCache publish
# for Wan 14B, and LightX2V's 671 -> 344 s with TeaCache (../shared/docs/gpu-notes.md). To check with real
# weights: the job log's "step cache: N of 30 steps computed" at 720p, and PSNR against `none`.
REGULAR_COMPUTED_SHARE = 0.5
FAST_STEPS = 4  # fast mode: a 4-step distillation LoRA, no CFG (pipelines/fast_mode.py)
ACCELERATION_FORWARDS = {
    "none": STEPS * FORWARDS_PER_STEP,
    "regular": round(STEPS * FORWARDS_PER_STEP * REGULAR_COMPUTED_SHARE),
    "fast": FAST_STEPS,
}
# The targets on one H100 80GB, seconds per job: (acceleration, shape) -> target.
TARGETS_S = {("regular", "720p"): 300.0, ("none", "720p"): 600.0, ("regular", "480p"): 75.0,
             ("fast", "720p"): 45.0}
FORMULA = (f"{STEPS * FORWARDS_PER_STEP} x forward_s + {VAE_ENCODES} x vae_encode_s + vae_decode_s "
           "(VAE measured at 720p, tiled for group_offload; other sizes scaled by pixel count)")


def vae_job_seconds(record: dict[str, Any], label: str, tiled: bool = False) -> float | None:
    """VAE seconds one job at `label` spends, from the 720p VAE phase (None when it did not run)."""
    vae = _results(record, "vae_720p")
    decode = vae.get("decode_tiled_s" if tiled else "decode_s")
    encode = vae.get("encode_tiled_s" if tiled else "encode_s", vae.get("encode_s"))
    if encode is None or decode is None:
        return None
    shapes = record.get("shapes", {})
    ratio = _pixels(shapes.get(label)) / _pixels(shapes.get("720p"))
    return (VAE_ENCODES * encode + decode) * ratio


def modes(record: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """mode -> shape label -> {forward_s, peak_gib}: every configuration a forward was timed in."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for name, phase in record.get("phases", {}).items():
        res = phase.get("results") or {}
        if phase.get("status") != "ok":
            continue
        if name.startswith("forward_"):
            _, label, backend = name.split("_", 2)
            found.setdefault(backend, {})[label] = {
                "forward_s": res["forward_s"], "peak_gib": res.get("peak_gib")}
        elif name == "compile" and res.get("compiled_forward_s") is not None:
            found.setdefault(f"{res['backend']}+compile", {})[res["shape"]] = {
                "forward_s": res["compiled_forward_s"], "peak_gib": res.get("peak_gib")}
        elif name.startswith("fp8_forward_"):
            found.setdefault(f"fp8/{res['backend']}", {})[name.removeprefix("fp8_forward_")] = {
                "forward_s": res["forward_s"], "peak_gib": res.get("peak_gib")}
        elif name == "fp8_compile" and res.get("compiled_forward_s") is not None:
            found.setdefault(f"fp8/{res['backend']}+compile", {})[res["shape"]] = {
                "forward_s": res["compiled_forward_s"], "peak_gib": res.get("peak_gib")}
        elif name == "fp8_memory" and res.get("forward_s") is not None:
            found.setdefault(f"all_on_gpu/fp8/{res['backend']}", {})[res["shape"]] = {
                "forward_s": res["forward_s"], "peak_gib": res.get("peak_gib")}
        elif name == "memory_plans":
            for plan, figures in res.items():
                if isinstance(figures, dict) and figures.get("forward_s") is not None:
                    found.setdefault(f"{plan}/{figures['backend']}", {})[figures["shape"]] = {
                        "forward_s": figures["forward_s"], "peak_gib": figures.get("peak_gib")}
    return found


def projections(record: dict[str, Any]) -> dict[str, Any]:
    """Projected seconds for one 30-step job with CFG, per mode and shape."""
    out: dict[str, Any] = {"formula": FORMULA, "modes": {}}
    for mode, shapes in modes(record).items():
        rows = {}
        for label, figures in shapes.items():
            forwards = STEPS * FORWARDS_PER_STEP * figures["forward_s"]
            vae = vae_job_seconds(record, label, tiled=mode.startswith("group_offload"))
            rows[label] = {
                "forward_s": figures["forward_s"],
                "forwards_s": round(forwards, 2),
                "vae_s": None if vae is None else round(vae, 2),
                "job_s": round(forwards + (vae or 0.0), 2),
                "includes_vae": vae is not None,
                "peak_gib": figures.get("peak_gib"),
                "acceleration_job_s": {name: round(count * figures["forward_s"] + (vae or 0.0), 2)
                                       for name, count in ACCELERATION_FORWARDS.items()},
            }
        out["modes"][mode] = rows
    return out


def table(record: dict[str, Any]) -> str:
    proj = record.get("projections") or projections(record)
    lines = [f"Projected {STEPS}-step job with CFG = {FORMULA}",
             f"{'mode':<26} {'shape':<6} {'forward s':>10} {'VAE s':>7} {'job s':>8} {'job min':>8} "
             f"{'peak GiB':>9}"]
    for mode, rows in proj["modes"].items():
        for label, row in sorted(rows.items()):
            vae = "-" if row["vae_s"] is None else f"{row['vae_s']:.1f}"
            peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
            lines.append(f"{mode:<26} {label:<6} {row['forward_s']:>10.3f} {vae:>7} {row['job_s']:>8.1f} "
                         f"{row['job_s'] / 60:>8.1f} {peak:>9}")
    lines.append(f"Per acceleration (forwards: {ACCELERATION_FORWARDS}; regular assumes "
                 f"{REGULAR_COMPUTED_SHARE:.0%} computed, unmeasured); job s, * = meets the issue's target")
    lines.append(f"{'mode':<26} {'shape':<6} " + " ".join(f"{name:>10}" for name in ACCELERATION_FORWARDS))
    for mode, rows in proj["modes"].items():
        for label, row in sorted(rows.items()):
            jobs = row.get("acceleration_job_s") or {}
            cells = []
            for name in ACCELERATION_FORWARDS:
                target = TARGETS_S.get((name, label))
                seconds = jobs.get(name)
                mark = "*" if target is not None and seconds is not None and seconds <= target else " "
                cells.append("-".rjust(10) if seconds is None else f"{seconds:>9.1f}{mark}")
            lines.append(f"{mode:<26} {label:<6} " + " ".join(cells))
    phases = record.get("phases", {})
    skipped = [f"{n} ({p.get('reason')})" for n, p in phases.items() if p.get("status") == "skipped"]
    errors = [f"{n} ({p.get('error', '')[:160]})" for n, p in phases.items() if p.get("status") == "error"]
    lines.append(f"skipped: {'; '.join(skipped) or 'none'}")
    lines.append(f"errors: {'; '.join(errors) or 'none'}")
    lines.append(f"total {record.get('elapsed_s', 0):.0f}s of a {record.get('budget_s', 0):.0f}s budget")
    return "\n".join(lines)


def _results(record: dict[str, Any], name: str) -> dict[str, Any]:
    phase = record.get("phases", {}).get(name, {})
    return phase.get("results", {}) if phase.get("status") == "ok" else {}


def _pixels(shape: dict[str, int] | None) -> float:
    return float(shape["height"] * shape["width"]) if shape else float("nan")
