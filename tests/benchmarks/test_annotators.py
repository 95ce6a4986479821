"""The full-size bench's model definitions: real sizes, checked on the meta device (no memory, no files)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from benchmarks import annotators, annotators_full_size
from benchmarks import full_size_models as full_size
from preprocessors.annotators import catalog


def _meta_parameters(make) -> int:
    with torch.device("meta"):
        model = make()
    assert next(model.parameters()).is_meta
    return sum(p.numel() for p in model.parameters())


def test_transformers_models_have_the_published_sizes():
    from transformers import (
        DepthAnythingForDepthEstimation,
        DPTForDepthEstimation,
        Qwen2ForCausalLM,
        ViTForImageClassification,
    )

    assert _meta_parameters(lambda: DPTForDepthEstimation(full_size.midas_config())) == (
        full_size.MIDAS_PARAMETERS
    )
    assert _meta_parameters(lambda: DepthAnythingForDepthEstimation(full_size.depth_anything_config())) == (
        full_size.DEPTH_ANYTHING_PARAMETERS
    )
    assert _meta_parameters(lambda: ViTForImageClassification(full_size.nsfw_config())) == (
        full_size.NSFW_PARAMETERS
    )
    assert _meta_parameters(lambda: Qwen2ForCausalLM(full_size.prompt_llm_config())) == (
        full_size.PROMPT_LLM_PARAMETERS
    )
    # The published sizes, rounded: ~123 M, 335 M, 86 M, 3.09 B.
    assert round(full_size.MIDAS_PARAMETERS / 1e6) in (122, 123)
    assert round(full_size.DEPTH_ANYTHING_PARAMETERS / 1e6) == 335
    assert round(full_size.NSFW_PARAMETERS / 1e6) == 86
    assert round(full_size.PROMPT_LLM_PARAMETERS / 1e7) == 309


def test_rife_is_the_real_network():
    from preprocessors.interpolation.rife import IFNet

    assert _meta_parameters(IFNet) == full_size.RIFE_PARAMETERS


def test_depth_anything_processes_832x480_at_518x896():
    from transformers import DPTImageProcessor

    from preprocessors.annotators.tiny import IMAGENET_MEAN, IMAGENET_STD

    processor = DPTImageProcessor(
        size={"height": full_size.DEPTH_ANYTHING_SIZE, "width": full_size.DEPTH_ANYTHING_SIZE},
        keep_aspect_ratio=True, ensure_multiple_of=14, resample=3, do_pad=False,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )
    frame = torch.zeros(1, 3, 480, 832, dtype=torch.uint8)
    assert tuple(processor(images=frame, return_tensors="pt")["pixel_values"].shape) == (1, 3, 518, 896)


def test_unbuildable_models_are_reported_as_skipped(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["bench", "--full-size", "--only", catalog.FILM.folder,
                                      catalog.DWPOSE.folder, "--threads", str(torch.get_num_threads()),
                                      "--tmp", str(tmp_path)])
    annotators.main()
    out = capsys.readouterr().out
    assert f"{catalog.FILM.folder:<36} skipped:" in out
    assert f"{catalog.DWPOSE.folder:<36} skipped:" in out
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_forward_clock_records_time_and_input_shape():
    net = torch.nn.Conv2d(3, 2, 1)
    clock = annotators_full_size._ForwardClock(net)
    net(torch.zeros(2, 3, 5, 7))
    clock.close()
    net(torch.zeros(1, 3, 4, 4))  # hooks removed: not recorded
    assert clock.shape == (2, 3, 5, 7)
    assert clock.seconds > 0


@pytest.mark.parametrize("n", [1, 3])
def test_safety_run_checks_eight_frames_of_an_81_frame_video(n):
    seen = []

    class Checker:
        def check_frames(self, video):
            seen.append(video.shape)

    frames = np.zeros((n + 1, 4, 6, 3), dtype=np.uint8)
    assert annotators_full_size._run_safety(Checker(), frames, n) == 8
    assert seen == [(81, 4, 6, 3)]
