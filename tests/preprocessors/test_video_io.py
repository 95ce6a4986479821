"""Decoding user media and writing result MP4s: round trips, hostile inputs, truncation and atomicity."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from preprocessors import video_io
from preprocessors.video_io import (
    ImageDecodeError,
    VideoDecodeError,
    VideoInfo,
    probe_video,
    read_image,
    read_video,
    write_mp4,
)

H, W = 48, 64
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [20, 20, 20], [200, 120, 40]])
CODEC_TOLERANCE = 6  # mean per-channel error allowed after H.264 + yuv420p at crf 18


def solid_frames(colors: np.ndarray, height: int = H, width: int = W) -> np.ndarray:
    """One solid-colour frame per colour: distinct and easy to recognise after lossy coding."""
    frames = np.empty((len(colors), height, width, 3), dtype=np.uint8)
    frames[:] = colors[:, None, None, :].astype(np.uint8)
    return frames


def noisy_frames(count: int, seed: int = 0) -> np.ndarray:
    """Frames that compress badly, so the media data dominates the file (useful for truncation)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 60, size=(count, H, W, 3))
    levels = np.arange(count)[:, None, None, None] * (180 // count)
    return (noise + levels).astype(np.uint8)


def channel_means(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1, 3).mean(axis=1)


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("fps", [16, 24])
def test_round_trip_keeps_count_size_integer_fps_and_frame_order(tmp_path: Path, fps: int) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(solid_frames(COLORS), fps, dest)

    frames, read_fps = read_video(dest)

    assert frames.dtype == np.uint8
    assert frames.shape == (len(COLORS), H, W, 3)
    assert read_fps == float(fps)
    np.testing.assert_allclose(channel_means(frames), COLORS, atol=CODEC_TOLERANCE)


def test_probe_reports_metadata_of_written_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(solid_frames(COLORS), 16, dest)

    assert probe_video(dest) == VideoInfo(width=W, height=H, fps=16.0, num_frames=6, duration=6 / 16)


def test_webm_without_stored_frame_count_is_estimated_from_duration(tmp_path: Path) -> None:
    dest = tmp_path / "clip.webm"
    with av.open(str(dest), "w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=16)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for pts, frame in enumerate(solid_frames(COLORS)):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts = pts
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    with av.open(str(dest)) as container:
        assert container.streams.video[0].frames == 0  # Matroska stores no count: the estimate is exercised

    info = probe_video(dest)

    assert (info.width, info.height, info.fps) == (W, H, 16.0)
    assert info.num_frames == len(COLORS) == len(read_video(dest)[0])


def test_ntsc_rate_is_stored_as_exact_rational(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(solid_frames(COLORS[:3]), 30000 / 1001, dest)

    with av.open(str(dest)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)
    assert read_video(dest)[1] == pytest.approx(30000 / 1001, abs=1e-12)


def test_gradient_survives_round_trip(tmp_path: Path) -> None:
    ramp = np.linspace(0, 255, W).astype(np.uint8)
    frames = np.broadcast_to(ramp[None, None, :, None], (3, H, W, 3)).copy()
    dest = tmp_path / "ramp.mp4"
    write_mp4(frames, 16, dest)

    decoded, _ = read_video(dest)

    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3


def test_odd_size_is_padded_by_replicating_the_edge(tmp_path: Path) -> None:
    frames = np.zeros((2, 47, 63, 3), dtype=np.uint8)
    frames[:, :, -1] = 255  # a white last column; padding must repeat it, not add black
    frames[:, -1, :] = 255  # and a white last row
    dest = tmp_path / "odd.mp4"
    write_mp4(frames, 16, dest)

    decoded, _ = read_video(dest)

    assert decoded.shape == (2, 48, 64, 3)
    assert decoded[:, :, -2:].mean() > 230  # original and padded columns both white
    assert decoded[:, -2:, :].mean() > 230
    assert decoded[:, :40, :56].mean() < 10  # the black body is untouched


def test_output_is_h264_yuv420p_with_moov_before_media(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(noisy_frames(8), 16, dest)

    with av.open(str(dest)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    data = dest.read_bytes()
    # +faststart: the index (moov) precedes the media (mdat), so browsers can play while downloading.
    assert 0 < data.index(b"moov") < data.index(b"mdat")


def test_written_file_is_readable_by_others(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(solid_frames(COLORS[:1]), 16, dest)

    assert dest.stat().st_mode & 0o777 == 0o644


def test_max_frames_stops_decoding_early(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    write_mp4(solid_frames(COLORS), 16, dest)

    frames, _ = read_video(dest, max_frames=2)

    assert frames.shape[0] == 2
    np.testing.assert_allclose(channel_means(frames), COLORS[:2], atol=CODEC_TOLERANCE)


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    # A phone video: stored landscape, with a display matrix saying "turn 90 degrees counter-clockwise".
    stored = np.zeros((H, W, 3), dtype=np.uint8)
    stored[: H // 2, : W // 2] = 255  # white top-left quadrant
    dest = tmp_path / "rotated.mp4"
    with av.open(str(dest), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_rotation(90)
        for pts in range(2):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = pts
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))

    frames, _ = read_video(dest)
    info = probe_video(dest)

    assert (info.width, info.height) == (H, W)
    assert frames.shape == (2, W, H, 3)
    # Counter-clockwise: the top-left corner ends up bottom-left.
    assert frames[0, -W // 2 + 4 :, : H // 2 - 4].mean() > 240
    assert frames[0, : W // 2 - 4].mean() < 10


# ----------------------------------------------------------------------------------- hostile inputs


def _write_png(path: Path) -> None:
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(path, format="PNG")


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        for index in range(3):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _write_hls_playlist(path: Path) -> None:
    # A playlist that would make FFmpeg read another local file: must be refused, not followed.
    target = path.parent / "target.mp4"
    write_mp4(solid_frames(COLORS[:1]), 16, target)
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{target}\n#EXT-X-ENDLIST\n")


NON_VIDEOS = {
    "random.bin": lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
    "empty.mp4": lambda p: p.write_bytes(b""),
    "notes.txt": lambda p: p.write_text("hello world\n" * 50),  # FFmpeg's tty demuxer would call this a video
    "image.png": _write_png,
    "image.mp4": _write_png,  # the extension must not matter
    "audio.m4a": _write_audio_only,
    "playlist.m3u8": _write_hls_playlist,
}


@pytest.mark.parametrize("name", sorted(NON_VIDEOS))
def test_non_videos_raise_video_decode_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    NON_VIDEOS[name](path)

    with pytest.raises(VideoDecodeError, match="not a decodable video"):
        probe_video(path)
    with pytest.raises(VideoDecodeError, match="not a decodable video"):
        read_video(path)


def test_missing_file_is_a_caller_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "nope.mp4")


@pytest.mark.parametrize("keep", [0.02, 0.2, 0.5, 0.8, 0.97])
def test_truncated_mp4_yields_a_prefix_or_video_decode_error(tmp_path: Path, keep: float) -> None:
    frames = noisy_frames(20)
    whole = tmp_path / "whole.mp4"
    write_mp4(frames, 16, whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])

    try:
        decoded, fps = read_video(cut)
    except VideoDecodeError:
        assert keep < 0.5, "half a faststart file still holds decodable frames"
        return
    assert fps == 16.0
    assert 1 <= len(decoded) < len(frames)
    # The frames that come back are the first ones, in order (their brightness steps by 9 per frame).
    mean_errors = np.abs(decoded.mean(axis=(1, 2, 3)) - frames[: len(decoded)].mean(axis=(1, 2, 3)))
    assert (mean_errors < 3).all()


# ------------------------------------------------------------------------------------------- atomicity


def test_encoder_failure_midway_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = video_io._to_video_frame
    calls = 0

    def failing_after_two(rgb: np.ndarray) -> av.VideoFrame:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("encoder exploded")
        return real(rgb)

    monkeypatch.setattr(video_io, "_to_video_frame", failing_after_two)
    dest = tmp_path / "out.mp4"

    with pytest.raises(RuntimeError, match="encoder exploded"):
        write_mp4(noisy_frames(6), 16, dest)

    assert calls == 3  # it really failed mid-stream, with the container open
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"previous result")

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(video_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_mp4(solid_frames(COLORS), 16, dest)

    assert dest.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [dest]


def test_success_replaces_an_existing_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.mp4"
    dest.write_bytes(b"previous result")

    write_mp4(solid_frames(COLORS), 16, dest)

    assert probe_video(dest).num_frames == len(COLORS)
    assert list(tmp_path.iterdir()) == [dest]


@pytest.mark.parametrize(
    ("frames", "fps", "crf"),
    [
        (np.zeros((2, H, W, 3), dtype=np.float32), 16, 18),  # wrong dtype
        (np.zeros((2, H, W), dtype=np.uint8), 16, 18),  # no channels
        (np.zeros((0, H, W, 3), dtype=np.uint8), 16, 18),  # no frames
        (np.zeros((2, H, W, 3), dtype=np.uint8), 0, 18),  # no rate
        (np.zeros((2, H, W, 3), dtype=np.uint8), float("nan"), 18),
        (np.zeros((2, H, W, 3), dtype=np.uint8), 16, 60),  # crf out of range
    ],
)
def test_invalid_arguments_raise_before_touching_disk(
    tmp_path: Path, frames: np.ndarray, fps: float, crf: int
) -> None:
    with pytest.raises(ValueError):
        write_mp4(frames, fps, tmp_path / "out.mp4", crf=crf)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ images


def test_read_image_returns_exact_rgb_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")

    image = read_image(tmp_path / "a.png")

    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, pixels)


def test_read_image_expands_grayscale_and_palette(tmp_path: Path) -> None:
    gray = np.full((H, W), 77, dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(tmp_path / "l.png")
    palette = Image.new("P", (W, H), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "p.png")

    assert (read_image(tmp_path / "l.png") == 77).all()
    np.testing.assert_array_equal(read_image(tmp_path / "p.png")[0, 0], [10, 200, 30])


def test_transparency_is_composited_over_the_background(tmp_path: Path) -> None:
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[:, : W // 2] = [255, 255, 255, 255]  # opaque white left half, fully transparent black right half
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")

    on_white = read_image(tmp_path / "a.png")
    on_black = read_image(tmp_path / "a.png", background=(0, 0, 0))

    assert on_white.shape == (H, W, 3)
    assert (on_white == 255).all()
    assert (on_black[:, : W // 2] == 255).all() and (on_black[:, W // 2 :] == 0).all()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((H, W, 3), dtype=np.uint8)
    stored[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "a.png", exif=exif)

    image = read_image(tmp_path / "a.png")

    assert image.shape == (W, H, 3)
    assert image[0, -1].tolist() == [255, 255, 255]  # clockwise: top-left moves to top-right


def test_read_image_rejects_non_images(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("not an image")
    write_mp4(solid_frames(COLORS[:1]), 16, tmp_path / "v.mp4")
    pixels = np.random.default_rng(2).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:500])

    for name in ("a.txt", "v.mp4", "cut.png"):
        with pytest.raises(ImageDecodeError, match="image"):
            read_image(tmp_path / name)
