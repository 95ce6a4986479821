"""What each task's plan conditions the model on at fal's real sizes (no model runs): the output size
`aspect_ratio: auto` gives, which pixels are kept or generated, and reframe's refusal when nothing is left
to generate."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from preprocessors.sizing import target_size
from server.contract.errors import InputError
from server.contract.inputs import WanVACEInput
from server.contract.limits import InputLimits
from server.files.local import LocalFileStore
from server.worker.failures import failure_of
from server.worker.fetch import Fetcher
from server.worker.inputs import InputReader
from server.worker.tasks import TaskContext, plan_for
from server.worker.types import Conditioned, JobHooks, Timing


def request(task: str, **fields: Any) -> WanVACEInput:
    return WanVACEInput.model_validate({"prompt": "p", "video_url": "https://example.com/v.mp4",
                                        "task": task, "resolution": "480p", **fields})


@pytest.fixture
def reader(tmp_path: Path) -> InputReader:
    files = LocalFileStore(tmp_path / "files")
    return InputReader(Fetcher(files, tmp_path / "work", max_bytes=1 << 20, timeout_s=5.0), InputLimits(),
                       tmp_path / "scratch")


def condition(task: str, frames: np.ndarray, reader: InputReader | None = None, **fields: Any) -> Conditioned:
    ctx = TaskContext(sizes=target_size, reader=reader, control=None,  # type: ignore[arg-type]
                      hooks=JobHooks(lambda _: None, lambda: False))
    return plan_for(task).condition(request(task, **fields), frames, Timing(16.0, len(frames)), ctx)


def png_uri(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def gradient(width: int, height: int) -> np.ndarray:
    """One frame whose every pixel differs from its neighbours: a crop or a shift shows up in the values."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    frame = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                      np.full((height, width), 128, np.float32)], axis=-1)
    return frame.astype(np.uint8)[None]


def generated_fraction(conditioned: Conditioned) -> float:
    return float(conditioned.conditioning.mask.mean())


def test_outpainting_auto_generates_only_the_requested_sides_at_the_canvas_aspect() -> None:
    # fal's typical request: a 16:9 source at 480p, left and right, 0.25.
    frames = gradient(832, 480)
    sides = {"expand_left": True, "expand_right": True, "expand_ratio": 0.25}
    before = condition("outpainting", frames, aspect_ratio="16:9", **sides)  # what auto did before
    after = condition("outpainting", frames, aspect_ratio="auto", **sides)
    assert (before.width, before.height) == (832, 480)
    assert generated_fraction(before) == pytest.approx(0.555, abs=1e-3)
    assert (before.conditioning.mask[0, 0] == 1).all()  # a band above the source is generated too
    assert (after.width, after.height) == (1024, 384)
    assert generated_fraction(after) == pytest.approx(1 / 3, abs=0.02)
    mask = after.conditioning.mask[0]
    kept_columns = np.flatnonzero((mask == 0).all(axis=0))
    assert (mask[:, kept_columns] == 0).all()  # the source spans every row: nothing above or below it
    assert (mask[:, : kept_columns[0]] == 1).all() and (mask[:, kept_columns[-1] + 1 :] == 1).all()
    assert len(kept_columns) == round(832 * 384 / 480)  # kept at 0.8 scale instead of 0.667


@pytest.mark.parametrize("task", ["depth", "inpainting"])
def test_auto_keeps_a_4_3_input_whole(task: str, reader: InputReader) -> None:
    frames = gradient(640, 480)
    fields: dict[str, Any] = {"aspect_ratio": "auto"}
    if task == "inpainting":
        # The region to inpaint is the input's top 40 rows, which 16:9's cover-crop used to cut away.
        mask = np.zeros((480, 640), np.uint8)
        mask[:40] = 255
        fields["mask_image_url"] = png_uri(mask)
        before = condition(task, frames, reader, aspect_ratio="16:9", mask_image_url=fields["mask_image_url"])
        assert before.conditioning.mask.sum() == 0  # the whole region was cropped away
    out = condition(task, frames, reader, **fields)
    assert (out.width, out.height) == (720, 544)
    if task == "inpainting":
        rows = np.flatnonzero(out.conditioning.mask[0].any(axis=1))
        assert rows[0] == 0 and abs(len(rows) - 40 * 544 / 480) <= 1  # all 40 rows, scaled by 544/480
    # Cover-scaled by 544/480: 725 columns, 2 cut at each side; every row survives (was 480/624 = 77%).
    source = out.source[0].astype(int)
    assert source[:, 0, 1].min() < 3 and source[:, 0, 1].max() > 252  # the first and last rows are there
    assert abs(source[0, 0, 0] - 0) <= 2 and abs(source[0, -1, 0] - 255) <= 2  # so are the side columns


def test_explicit_aspect_ratios_are_unchanged() -> None:
    frames = gradient(640, 480)
    assert (condition("depth", frames, aspect_ratio="16:9").width, 480) == (832, 480)
    out = condition("depth", frames, aspect_ratio="1:1")
    assert (out.width, out.height) == (480, 480)


def test_reframe_with_nothing_to_generate_is_a_422_naming_aspect_ratio() -> None:
    with pytest.raises(InputError) as raised:
        condition("reframe", gradient(854, 480), aspect_ratio="auto")
    error = failure_of(raised.value)
    assert error.status_code == 422
    item = error.body["detail"][0]
    assert item["loc"] == ["body", "aspect_ratio"] and item["type"] == "value_error"
    assert "nothing to generate" in item["msg"] and "9:16" in item["msg"] and "auto chose 16:9" in item["msg"]
    with pytest.raises(InputError, match="zoom_factor"):  # zoomed until the picture fills the frame
        condition("reframe", gradient(640, 480), aspect_ratio="16:9", zoom_factor=0.5)


def test_reframe_auto_still_reframes_to_the_orientation_preset() -> None:
    out = condition("reframe", gradient(640, 480), aspect_ratio="auto")
    assert (out.width, out.height) == (832, 480)
    assert generated_fraction(out) == pytest.approx(1 - 640 / 832, abs=1e-3)
    out = condition("reframe", gradient(832, 480), aspect_ratio="9:16")
    assert (out.width, out.height) == (480, 832) and generated_fraction(out) > 0.6
