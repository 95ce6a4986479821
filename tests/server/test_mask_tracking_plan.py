"""Inpainting with `mask_image_url` follows the marked object through the video (server/worker/tasks.py and
models.py). The tracker is a deterministic colour tracker here: the tiny SAM 2's random weights would hide
whether the plan uses its masks right (the real model: tests/annotators/test_mask_tracking.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from preprocessors.annotators.mask_tracking import dilate_masks
from preprocessors.annotators.registry import AnnotatorConfig, Annotators
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits
from server.files.local import LocalFileStore
from server.worker.fetch import Fetcher
from server.worker.inputs import InputReader
from server.worker.models import load_models
from server.worker.tasks import TaskContext, plan_for
from server.worker.types import JobHooks, Timing

W, H, REAL, PADDED = 96, 48, 7, 9
SQUARE, STEP = 10, 8
RED = (230, 20, 20)


class ColourTracker:
    """Follows the first mask's mean colour: every pixel within 30 levels of it, in every frame."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def track(self, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        self.calls.append(len(frames))
        colour = frames[0][first_mask > 0].mean(axis=0)
        near = np.abs(frames.astype(np.float32) - colour).max(axis=-1) <= 30
        return np.where(near, np.uint8(255), np.uint8(0))


def clip() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A red square sliding right over a blue-green gradient, held on its last frame (the 4k+1 padding)."""
    x = np.linspace(0, 120, W, dtype=np.float32)
    frames = np.empty((PADDED, H, W, 3), np.uint8)
    frames[..., 0] = 0
    frames[..., 1] = x[None, :]
    frames[..., 2] = 200
    corners = []
    for i in range(PADDED):
        left = 5 + STEP * min(i, REAL - 1)
        frames[i, 19 : 19 + SQUARE, left : left + SQUARE] = RED
        corners.append((19, left))
    return frames, corners


def square_mask(corner: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[corner[0] : corner[0] + SQUARE, corner[1] : corner[1] + SQUARE] = 255
    return mask


def png_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def reader(tmp_path: Path) -> InputReader:
    files = LocalFileStore(tmp_path / "files")
    return InputReader(Fetcher(files, tmp_path / "work", max_bytes=1 << 20, timeout_s=5.0), InputLimits(),
                       tmp_path / "scratch")


def request(**fields: Any) -> WanVACEInput:
    return WanVACEInput.model_validate({"prompt": "p", "video_url": "https://example.com/v.mp4",
                                        "task": "inpainting", **fields})


def condition(reader: InputReader, tracker: Any, frames: np.ndarray, mask_uri: str) -> np.ndarray:
    ctx = TaskContext(sizes=lambda *_: (W, H), reader=reader, control=None,
                      hooks=JobHooks(lambda _: None, lambda: False), tracker=tracker)
    plan = plan_for("inpainting")
    conditioned = plan.condition(request(mask_image_url=mask_uri), frames, Timing(16.0, REAL), ctx)
    assert conditioned.conditioning.video[conditioned.conditioning.mask == 1].max() == 0.5  # grayed
    return conditioned.conditioning.mask


def test_the_mask_follows_the_object_and_is_dilated(reader: InputReader) -> None:
    frames, corners = clip()
    tracker = ColourTracker()
    mask = condition(reader, tracker, frames, png_uri(square_mask(corners[0])))
    assert tracker.calls == [REAL]  # the real frames only
    expected = dilate_masks(np.stack([square_mask(c) for c in corners])) == 255
    np.testing.assert_array_equal(mask == 1, expected)
    for i, (top, left) in enumerate(corners):  # every frame's square is covered, with a margin around it
        assert (mask[i, top - 1 : top + SQUARE + 1, left - 1 : left + SQUARE + 1] == 1).all()
        assert (mask[i, top + 4, left - 2 : left + SQUARE + 2] == 1).all()  # 2 px (the minimum) at the sides
        assert mask[i].sum() < (SQUARE + 4) ** 2  # and no more
    np.testing.assert_array_equal(mask[REAL:], mask[REAL - 1 : REAL].repeat(PADDED - REAL, axis=0))


def test_without_a_tracker_the_mask_image_is_static(reader: InputReader) -> None:
    frames, corners = clip()
    mask = condition(reader, None, frames, png_uri(square_mask(corners[0])))
    assert (mask == mask[0]).all()
    top, left = corners[-1]
    assert not mask[-1, top : top + SQUARE, left : left + SQUARE].any()  # the square has moved out of it


def test_the_operator_setting_chooses_tracking_and_a_missing_model_names_the_field(tmp_path: Path) -> None:
    hooks = JobHooks(lambda _: None, lambda: False)
    req = request(mask_image_url="https://example.com/m.png", enable_safety_checker=False)
    static = Annotators(AnnotatorConfig(root=tmp_path, mask_tracking="static"))
    assert load_models(plan_for("inpainting"), req, static, hooks).tracker is None
    with pytest.raises(InputError) as raised:
        load_models(plan_for("inpainting"), req, Annotators(AnnotatorConfig(root=tmp_path)), hooks)
    assert raised.value.field == "mask_image_url" and "vace download --annotators" in raised.value.message
    mask_video = request(mask_video_url="https://example.com/m.mp4", enable_safety_checker=False)
    assert load_models(plan_for("inpainting"), mask_video, Annotators(AnnotatorConfig(root=tmp_path)),
                       hooks).tracker is None  # a mask video is used as it is
