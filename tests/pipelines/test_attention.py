"""--attention: selection logic with injected measurements, availability reasons, and the loader wiring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines import attention
from pipelines.attention import (
    ATTENTION_CHOICES,
    AttentionBackendError,
    capability_reason,
    select_backend,
)
from server.settings import ATTENTION_BACKENDS


def _select(requested: str, *, on_gpu: bool = True, missing: dict[str, str] | None = None,
            errors: dict[str, float] | None = None, times: dict[str, float] | None = None,
            calls: list[str] | None = None):
    missing, errors = missing or {}, errors or {}
    times = times or {"native": 0.30, "cudnn": 0.20, "flash3": 0.15, "sage": 0.10}

    def seconds(choice: str) -> float:
        if calls is not None:
            calls.append(choice)
        return times[choice]

    return select_backend(requested, on_gpu, unavailable=missing.get,
                          rel_err=lambda c: errors.get(c, 2.3e-3), seconds=seconds)


def test_choices_match_the_api_process_copy() -> None:
    assert ATTENTION_BACKENDS == ATTENTION_CHOICES


def test_auto_picks_the_fastest_backend_that_passes() -> None:
    chosen = _select("auto", errors={"sage": 0.5}, missing={"flash3": "not installed"})
    assert chosen.choice == "cudnn" and chosen.backend == "_native_cudnn"
    by_name = {t.choice: t for t in chosen.trials}
    assert not by_name["flash3"].available and by_name["flash3"].reason == "not installed"
    assert by_name["sage"].rel_err == 0.5 and not by_name["sage"].passed
    assert "sage failed" in chosen.reason and "flash3 unavailable (not installed)" in chosen.reason


def test_a_backend_failing_the_check_is_never_picked_nor_timed() -> None:
    calls: list[str] = []
    chosen = _select("auto", errors={"sage": float("nan"), "flash3": 0.021}, calls=calls)
    assert chosen.choice == "cudnn"
    assert calls == ["native", "cudnn"]  # failed candidates are not timed


def test_a_backend_raising_in_its_check_is_a_failed_candidate() -> None:
    def boom(choice: str) -> float:
        if choice == "cudnn":
            raise RuntimeError("no kernel for this shape")
        return 1e-3

    chosen = select_backend("auto", True, unavailable=lambda c: None, rel_err=boom,
                            seconds={"native": 2.0, "cudnn": 1.0, "flash3": 3.0, "sage": 4.0}.get)
    assert chosen.choice == "native"
    assert "RuntimeError: no kernel" in next(t.reason for t in chosen.trials if t.choice == "cudnn")


def test_ties_go_to_the_simplest_backend() -> None:
    assert _select("auto", times=dict.fromkeys(("native", "cudnn", "flash3", "sage"), 0.2)).choice == "native"


def test_auto_on_cpu_is_native_without_measuring() -> None:
    def never(choice: str) -> float:
        raise AssertionError("nothing may be measured on a CPU")

    chosen = select_backend("auto", False, unavailable=never, rel_err=never, seconds=never)
    assert (chosen.choice, chosen.backend, chosen.trials) == ("native", "native", ())


def test_explicit_unavailable_backend_raises_with_the_reason() -> None:
    with pytest.raises(AttentionBackendError, match="--attention flash3 cannot be used: not installed"):
        _select("flash3", missing={"flash3": "not installed"})


def test_explicit_backend_failing_the_check_raises() -> None:
    with pytest.raises(AttentionBackendError, match=r"sage cannot be used: rel. error 1.3e-01"):
        _select("sage", errors={"sage": 0.13})


def test_explicit_backend_is_checked_but_not_timed() -> None:
    calls: list[str] = []
    chosen = _select("cudnn", calls=calls)
    assert chosen.choice == "cudnn" and calls == [] and chosen.trials[0].rel_err == 2.3e-3


def test_auto_with_nothing_working_raises() -> None:
    with pytest.raises(AttentionBackendError, match="no working backend"):
        _select("auto", errors=dict.fromkeys(("native", "cudnn", "flash3", "sage"), 1.0))


def test_unknown_value_is_refused() -> None:
    with pytest.raises(ValueError, match="must be one of auto"):
        _select("xformers")


@pytest.mark.parametrize(("choice", "capability", "versions", "expected"), [
    ("cudnn", (7, 5), {}, "compute capability 8.0 or newer (this GPU is 7.5)"),
    ("cudnn", (9, 0), {}, None),
    ("flash3", (8, 0), {"flash_attn_interface": "3.0.0"}, "Hopper"),
    ("flash3", (9, 0), {}, "flash_attn_interface"),
    ("flash3", (9, 0), {"flash_attn_interface": "3.0.0b1"}, None),
    ("sage", (9, 0), {}, "sageattention is not installed"),
    ("sage", (9, 0), {"sageattention": "1.0.6"}, "sageattention 1.0.6 is installed; diffusers' sage backend "
                                                  "needs >= 2.1.1"),
    ("sage", (9, 0), {"sageattention": "2.2.0+cu128"}, None),
])
def test_capability_and_package_reasons(choice: str, capability: tuple[int, int], versions: dict[str, str],
                                        expected: str | None) -> None:
    if choice == "cudnn" and expected is None and not torch.backends.cudnn.is_available():
        pytest.skip("torch built without cuDNN")
    reason = capability_reason(choice, capability, versions.get)
    assert reason == expected if expected is None else expected in reason


def test_cuda_backends_are_unavailable_on_a_cpu() -> None:
    assert attention.unavailable_reason("native", "cpu") is None
    assert "needs a CUDA GPU" in attention.unavailable_reason("cudnn", "cpu")


def test_real_check_accepts_native_and_catches_a_wrong_kernel() -> None:
    err = attention.measure_rel_err("native", "cpu", torch.float32)
    assert 0 <= err < 1e-5
    q, k, v = attention.random_qkv(attention.CHECK_SHAPE, "cpu", torch.float32)
    ref = attention.reference_attention(q, k, v)
    wrong = attention.reference_attention(q, k.flip(2), v.flip(2))  # heads mixed up: a layout bug
    assert attention.relative_error(wrong, ref) > 10 * attention.MAX_REL_ERR


def test_explicit_native_on_cpu_runs_the_real_check() -> None:
    chosen = attention.select_for_device("native", "cpu", torch.float32)
    assert chosen.choice == "native" and chosen.trials[0].rel_err < 1e-5


def test_loader_sets_the_chosen_backend(tiny_model_dir: Path) -> None:
    from pipelines.loader import load_pipeline

    pipe = load_pipeline(tiny_model_dir, device="cpu", attention="native")
    backends = {m.processor._attention_backend for m in pipe.transformer.modules() if hasattr(m, "processor")}
    assert {str(getattr(b, "value", b)) for b in backends} == {"native"}


def test_loader_refuses_an_unusable_backend_before_reading_weights(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import loader

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights were read")

    monkeypatch.setattr(loader.AutoencoderKLWan, "from_pretrained", never)
    with pytest.raises(AttentionBackendError, match="cudnn needs a CUDA GPU"):
        loader.load_pipeline(tiny_model_dir, device="cpu", attention="cudnn")


def test_selection_checks_at_the_loaded_models_head_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model's heads (size 12) are checked as such, not at the 14B model's 128."""
    shapes: list[tuple[int, ...]] = []
    real = attention.random_qkv

    def recorded(shape: tuple[int, int, int, int], *args: Any, **kwargs: Any) -> Any:
        shapes.append(tuple(shape))
        return real(shape, *args, **kwargs)

    monkeypatch.setattr(attention, "random_qkv", recorded)
    attention.select_for_device("native", "cpu", torch.float32, heads=2, head_dim=12)
    assert shapes == [(1, 1024, 2, 12)]
