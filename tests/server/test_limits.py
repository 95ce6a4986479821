"""Size caps (server/contract/limits.py): oversized inputs, request bodies, a full queue and a full disk.

Every input here fails before generation, so no test pays for one. The oversized media are real files whose
headers say what a real oversized file would say: a 16000x16000 PNG-coded MOV (one black frame, 280 KB), a
ten-hour 1 fps H.264 MP4 (16x16 pixels, 470 KB), PNGs larger than the pixel cap or Pillow's bomb guard.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from preprocessors.video_io import write_mp4
from server.cli import build_parser
from server.contract.errors import InputError
from server.contract.limits import InputLimits
from server.settings import Settings
from tests.server.conftest import LiveServer, Media, data_uri, start_server, wait_completed

APP = "fal-ai/wan-vace-14b"
QUEUE_CAP = 2
BODY_CAP = 100_000
OUTPUT_CAP = 150


def _encode(path: Path, codec: str, pix_fmt: str, size: int, rate: int, count: int) -> None:
    """`count` blank frames at `rate` fps; one frame object is re-encoded, so 36000 take well under 1 s."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        frame = av.VideoFrame(size, size, pix_fmt)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        for pts in range(count):
            frame.pts = pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _no_frames(path: Path) -> None:
    """An MP4 whose video track has no samples (FFmpeg then reports no video stream at all)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()  # writes the header although no frame follows


@dataclass(frozen=True)
class Big:
    huge_frame: Path  # 16000x16000, 1 frame
    ten_hours: Path  # 36000 frames at 1 fps
    many_frames: Path  # 36100 frames at 61 fps: under 600 s, over 36000 frames
    big_png: Path  # 4097x4097: over the pixel cap, under Pillow's guard
    bomb_png: Path  # 16000x16000: over Pillow's decompression-bomb guard too
    no_frames: Path
    truncated: Path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, media: Media) -> Big:
    folder = tmp_path_factory.mktemp("big")
    paths = Big(*(folder / name for name in ("huge.mov", "ten_hours.mp4", "many.mp4", "big.png", "bomb.png",
                                             "empty.mp4", "truncated.mp4")))
    _encode(paths.huge_frame, "png", "gray", 16000, 1, 1)
    _encode(paths.ten_hours, "libx264", "yuv420p", 16, 1, 36000)
    _encode(paths.many_frames, "libx264", "yuv420p", 16, 61, 36100)
    Image.new("L", (4097, 4097)).save(paths.big_png)
    Image.new("1", (16000, 16000)).save(paths.bomb_png)
    _no_frames(paths.no_frames)
    # Cut inside the moov atom (written first, +faststart): the container cannot even be opened.
    paths.truncated.write_bytes(media.control.read_bytes()[:600])
    return paths


def _video(url: str, **extra: object) -> dict[str, object]:
    return {"prompt": "x", "video_url": url, "resolution": "240p", "num_inference_steps": 2, **extra}


def _png(path: Path) -> str:
    return data_uri(path, "image/png")


def _cases(big: Big, media: Media) -> list[tuple[str, dict[str, object], str, str, dict[str, Any]]]:
    """(endpoint, input, field, error type, expected ctx subset) for each refused input."""
    control = data_uri(media.control)
    return [
        ("depth", _video(data_uri(big.huge_frame)), "video_url", "video_too_large",
         {"max_pixels": 4096 * 4096, "width": 16000, "height": 16000}),
        ("depth", _video(data_uri(big.ten_hours)), "video_url", "video_duration_too_long",
         {"max_duration": 600.0, "duration": 36000.0}),
        ("depth", _video(data_uri(big.many_frames)), "video_url", "video_duration_too_long",
         {"max_frames": 36000, "num_frames": 36100}),
        ("inpainting", _video(control, mask_video_url=data_uri(big.huge_frame)), "mask_video_url",
         "video_too_large", {"max_pixels": 4096 * 4096}),
        ("inpainting", _video(control, mask_video_url=data_uri(media.mask),
                              ref_image_urls=[_png(big.big_png)]),
         "ref_image_urls", "image_too_large", {"width": 4097, "height": 4097}),
        ("", _video(control, task="inpainting", mask_image_url=_png(big.bomb_png)), "mask_image_url",
         "image_too_large", {"max_pixels": 4096 * 4096}),
        ("depth", _video(data_uri(big.no_frames)), "video_url", "unsupported_video_format", {}),
        ("depth", _video(data_uri(big.truncated)), "video_url", "unsupported_video_format", {}),
    ]


def test_oversized_and_broken_inputs_end_with_a_422_before_generation(live_server: LiveServer, big: Big,
                                                                       media: Media) -> None:
    cases = _cases(big, media)
    with live_server.client() as client:
        submitted = []
        for endpoint, payload, *_ in cases:
            response = client.post(f"/queue/{APP}/{endpoint}".rstrip("/"), json=payload)
            assert response.status_code == 200, response.text
            submitted.append(response.json())
        for body, (endpoint, _payload, field, error_type, ctx) in zip(submitted, cases, strict=True):
            status = wait_completed(client, body["status_url"], timeout=120)
            assert status["error_type"] == error_type, (endpoint, field, status["error"])
            messages = [e["message"] for e in status["logs"]]
            assert not any(m.startswith(("Sampler", "Denoising")) for m in messages), messages
            result = client.get(body["response_url"])
            assert result.status_code == 422
            [item] = result.json()["detail"]
            assert item["loc"] == ["body", field] and item["type"] == error_type
            assert ctx.items() <= item.get("ctx", {}).items(), item
        # The worker survived all of them and is still the one that loaded the model.
        health = client.get("/health").json()
        assert health["status"] == "ok" and [w["state"] for w in health["workers"]] == ["ready"]


# -------------------------------------------------------------------- queue and body caps (no worker)


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No worker, so submitted jobs stay queued; tiny caps so the tests stay small."""
    server = start_server(tmp_path_factory.mktemp("capped") / "data", workers=0, extra_args=(
        "--max-queue-length", str(QUEUE_CAP), "--max-request-bytes", str(BODY_CAP),
        "--max-output-frames", str(OUTPUT_CAP)))
    yield server
    server.stop()


def _flat_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "error_type"} and body["error_type"] == error_type
    assert isinstance(body["detail"], str)
    assert response.headers["x-fal-error-type"] == error_type
    assert response.headers["x-fal-request-id"]


def test_request_body_cap_on_content_length_and_on_streamed_bytes(capped_server: LiveServer) -> None:
    padding = "A" * (BODY_CAP + 50_000)
    big_body = _video("data:video/mp4;base64," + padding)
    with capped_server.client() as client:
        _flat_error(client.post(f"/queue/{APP}/depth", json=big_body), 413, "request_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
            yield b'{"prompt": "x", "video_url": "data:video/mp4;base64,'
            for _ in range(20):
                yield b"A" * 10_000
            yield b'"}'

        streamed = client.post(f"/queue/{APP}/depth", content=chunks(),
                               headers={"Content-Type": "application/json"})
        _flat_error(streamed, 413, "request_too_large")
        # Uploads have their own (much larger) cap and stream to disk: the body cap does not apply.
        slot = client.post("/storage/upload/initiate",
                           json={"file_name": "v.mp4", "content_type": "video/mp4"})
        upload = client.put(slot.json()["upload_url"], content=b"\0" * (BODY_CAP * 2))
        assert upload.status_code == 200, upload.text
        assert upload.json()["size"] == BODY_CAP * 2


def test_full_queue_answers_429_in_fals_flat_form(capped_server: LiveServer, media: Media) -> None:
    payload = _video(data_uri(media.not_a_video))
    with capped_server.client() as client:
        queued = client.get("/health").json()["queued"]
        for _ in range(QUEUE_CAP - queued):
            assert client.post(f"/queue/{APP}/depth", json=payload).status_code == 200
        for path in (f"/queue/{APP}/depth", f"/run/{APP}/depth"):
            response = client.post(path, json=payload)
            _flat_error(response, 429, "queue_full")
            assert f"limit {QUEUE_CAP}" in response.json()["detail"]
        assert client.get("/health").json()["queued"] == QUEUE_CAP


def test_operator_output_cap_is_applied_at_submit(capped_server: LiveServer) -> None:
    """--max-output-frames reaches the submit check: reframe's interpolated length is refused up front."""
    reframe = {"video_url": "https://example.com/v.mp4", "match_input_num_frames": False, "num_frames": 81,
               "temporal_upsample_factor": 1}  # 161 frames
    with capped_server.client() as client:
        refused = client.post(f"/queue/{APP}/reframe", json=reframe)
        assert refused.status_code == 422, refused.text
        (item,) = refused.json()["detail"]
        assert item["type"] == "output_too_long" and item["loc"] == ["body", "temporal_upsample_factor"]
        assert f"at most {OUTPUT_CAP}" in item["msg"] and "161 frames" in item["msg"]
        depth = client.post(f"/queue/{APP}/depth", json={"prompt": "x", "video_url": "https://example.com/v.mp4",
                                                          "num_frames": 161})
        assert depth.status_code == 422 and depth.json()["detail"][0]["loc"] == ["body", "num_frames"]
        assert depth.json()["detail"][0]["msg"].endswith("lower num_frames")  # no advice about factors
        assert client.get("/health").json()["queued"] <= QUEUE_CAP  # nothing was queued by the refusals


# -------------------------------------------------------------------------------- in-process checks


class _FullDisk:
    def __init__(self, wrapped: bool) -> None:
        self.wrapped = wrapped

    def run(self, job: object, hooks: object) -> dict[str, Any]:
        error = OSError(errno.ENOSPC, "No space left on device")
        if self.wrapped:  # e.g. PyAV or our own code re-raising with the OS error as the cause
            raise RuntimeError("could not write the output") from error
        raise error


@pytest.mark.parametrize("wrapped", [False, True])
def test_disk_full_ends_the_job_with_a_clear_507(tmp_path: Path, wrapped: bool) -> None:
    from server.worker.loop import Worker

    worker = Worker(Settings(data_dir=tmp_path, model="tiny"), "w-test")
    submitted = worker.store.submit(f"{APP}/depth", {"seed": 1}, public_base="http://x")
    job = worker.store.claim("w-test")
    assert job is not None and job.id == submitted.id
    worker.run_job(_FullDisk(wrapped), job)  # type: ignore[arg-type]
    done = worker.store.get(job.id)
    assert done is not None and done.error is not None
    assert done.error.status_code == 507 and done.error.error_type == "runner_server_error"
    assert "out of disk space" in done.error.body["detail"]
    messages = [e.message for e in worker.store.logs(job.id, 0)]
    assert any(m.startswith(("OSError", "RuntimeError")) for m in messages), messages


def test_input_limits_check_order_and_boundaries() -> None:
    limits = InputLimits(max_pixels=100, max_seconds=10.0, max_frames=50)
    limits.check_video("video_url", 10, 10, 50, 10.0)  # exactly at every cap is fine
    limits.check_image("mask_image_url", 10, 10)
    for args, error_type in (((11, 10, 1, 1.0), "video_too_large"),
                             ((10, 10, 1, 10.5), "video_duration_too_long"),
                             ((10, 10, 51, 1.0), "video_duration_too_long")):
        with pytest.raises(InputError) as caught:
            limits.check_video("video_url", *args)
        assert caught.value.error_type == error_type and caught.value.field == "video_url"
    with pytest.raises(InputError, match="11x10"):
        limits.check_image("ref_image_urls", 11, 10)


def test_cli_defaults_are_the_settings_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []
    monkeypatch.setattr("server.api.app.create_app", lambda settings: served.append(settings))
    monkeypatch.setattr("server.api.server.run_server", lambda app, **kwargs: None)
    args = build_parser().parse_args(["serve", "--model", "tiny", "--data-dir", str(tmp_path)])
    assert args.func(args) == 0
    settings = Settings(data_dir=tmp_path, model="tiny")
    for name in ("max_input_pixels", "max_input_seconds", "max_input_frames", "max_request_bytes",
                 "max_queue_length"):
        assert getattr(served[0], name) == getattr(settings, name) == getattr(InputLimits(), name.replace(
            "_input", ""), getattr(settings, name)), name
    again = Settings.from_json(Settings(data_dir=tmp_path, model="tiny", max_input_pixels=7).to_json())
    assert again.max_input_pixels == 7 and InputLimits.from_settings(again).max_pixels == 7


def test_mask_of_another_size_and_length_is_fitted(tmp_path: Path) -> None:
    """README: masks are cover-resized (nearest-neighbour); a mask video is fitted in time like the input."""
    from server.contract.inputs import WanVACEInput
    from server.files.local import LocalFileStore
    from server.worker.fetch import Fetcher
    from server.worker.inputs import InputReader
    from server.worker.tasks import InpaintingPlan
    from server.worker.types import Timing

    files = LocalFileStore(tmp_path / "files")
    scratch = tmp_path / "work" / "job"
    scratch.mkdir(parents=True)
    reader = InputReader(Fetcher(files, tmp_path / "work", 10**6, 5.0), InputLimits(), scratch)
    frames = np.zeros((17, 24, 32, 3), np.uint8)  # the control video at the generation size
    timing = Timing(fps=16.0, num_frames=17)
    for count, fps in ((10, 8), (60, 16)):  # shorter (and slower) than the output, then longer
        mask = np.zeros((count, 48, 64, 3), np.uint8)
        mask[:, :, :32] = 255  # left half: generate
        path = tmp_path / f"mask-{count}.mp4"
        write_mp4(mask, fps, path)
        params = WanVACEInput.model_construct(mask_image_url=None, mask_video_url=data_uri(path))
        fitted = InpaintingPlan().mask(params, frames, timing, reader)
        assert fitted.shape == (17, 24, 32)
        assert set(np.unique(fitted)) <= {0, 255}
        assert (fitted[:, :, :15] == 255).all() and (fitted[:, :, 17:] == 0).all()
    image = np.zeros((96, 128, 3), np.uint8)
    image[:48] = 255  # top half
    png = tmp_path / "mask.png"
    Image.fromarray(image).save(png)
    params = WanVACEInput.model_construct(mask_image_url=_png(png), mask_video_url=None)
    fitted = InpaintingPlan().mask(params, frames, timing, reader)
    assert fitted.shape == (17, 24, 32)
    assert (fitted[:, :11] == 255).all() and (fitted[:, 13:] == 0).all()



def test_upload_cap_answers_in_the_same_flat_form(tmp_path: Path) -> None:
    """Storage's own cap (uploads skip the body cap) speaks fal's request-error form like every other cap."""
    from starlette.testclient import TestClient

    from server.api.app import create_app

    settings = Settings(data_dir=tmp_path / "data", model="tiny", max_upload_bytes=16)
    app = create_app(settings, run_workers=False)
    with TestClient(app) as client:
        assert client.post("/files/upload", content=b"x" * 16).status_code == 200
        _flat_error(client.post("/files/upload", content=b"x" * 17), 413, "file_too_large")
