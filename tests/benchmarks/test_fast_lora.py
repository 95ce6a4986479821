"""benchmarks/fast_lora.py at toy size on the CPU: the same code a GPU run uses, its figures and JSON."""

import json
from pathlib import Path

import pytest

from benchmarks.fast_lora import main


def test_tiny_run_writes_its_figures(tmp_path: Path) -> None:
    assert main(["--tiny", "--no-compile", "--rank", "4", "--out", str(tmp_path)]) == 0
    (written,) = tmp_path.glob("fast_lora_tiny_*.json")
    result = json.loads(written.read_text())
    figures = result["figures"]
    assert figures["off_equals_no_lora"] is True  # the LoRA switched off is the base model, bit for bit
    assert figures["lora_layers"] == 30 and figures["rank"] == 4  # 3 blocks x 10 linear layers
    assert all(figures[f"forward_{name}_s"] > 0 for name in ("no_lora", "lora_off", "lora_on"))
    # 4 steps without CFG; figures keep 4 significant digits.
    assert figures["projected_fast_job_transformer_s"] == pytest.approx(4 * figures["forward_lora_on_s"],
                                                                        rel=1e-3)
    assert result["device"]["device"] == "cpu"
    command = f"python -m benchmarks.fast_lora --tiny --no-compile --rank 4 --out {tmp_path}"
    assert result["command"] == command
