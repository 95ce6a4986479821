"""Decode user media into numpy arrays and encode result frames into a browser-friendly MP4.

Inputs are untrusted files fetched from URLs, so opening is restricted to ordinary video containers
(see ``_DEMUXERS``) and every FFmpeg/Pillow failure becomes a ``VideoDecodeError``/``ImageDecodeError``
whose message can be shown to the end user as is.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Demuxers we agree to open. An allowlist rather than FFmpeg's full probe because some demuxers open
# *other* files: an HLS playlist or an ffconcat list saved under any name would make FFmpeg read local
# files or fetch URLs (SSRF), and `tty` happily turns a .txt file into an "ANSI art video".
# Still-image demuxers (png_pipe, image2, ...) are left out on purpose: an image is not a video.
_DEMUXERS = "mov,matroska,avi,gif,mpegts,flv,mpeg,asf,ogg"
_OPEN_OPTIONS = {"format_whitelist": _DEMUXERS, "protocol_whitelist": "file"}

# Pillow formats a user image may be in. Limiting the plugins keeps e.g. EPS (which shells out to
# Ghostscript) out of reach of uploaded files.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO (camera) files


class VideoDecodeError(ValueError):
    """The file is not a video we can decode; the message is written for the end user."""


class ImageDecodeError(ValueError):
    """The file is not an image we can decode; the message is written for the end user."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, in display orientation (rotation already applied)."""

    width: int
    height: int
    fps: float
    num_frames: int  # may be estimated (see probe_video); the length read_video returns is authoritative
    duration: float  # seconds


# --------------------------------------------------------------------------------------------- decoding


@contextmanager
def _open_video_stream(path: PathLike) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """Open ``path`` and yield its first real video stream, translating FFmpeg errors for the user."""
    try:
        container = av.open(os.fspath(path), mode="r", container_options=_OPEN_OPTIONS)
    except FileNotFoundError:
        raise  # a missing local file is the caller's bug, not bad user input
    except av.FFmpegError as exc:
        raise VideoDecodeError(
            "not a decodable video: the file is not in a supported video format "
            "(MP4/MOV, WebM/MKV, AVI, GIF, MPEG-TS, FLV, MPEG, WMV, OGG)"
        ) from exc
    try:
        # Album art in audio files shows up as a one-frame "video" stream; it is not what the user meant.
        streams = [
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            raise VideoDecodeError("not a decodable video: the file has no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"  # frame + slice threads; decoding is otherwise single-core
        yield container, stream
    finally:
        container.close()


def _frame_rate(stream: av.VideoStream) -> Fraction:
    """The stream's average frame rate, falling back to FFmpeg's guesses when the container lacks it."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < rate < 1000:  # >= 1000 fps is a timestamp artefact, not a rate
            return Fraction(rate)
    raise VideoDecodeError("not a decodable video: the video has no usable frame rate")


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that bring the frame upright (phone videos store a display matrix)."""
    return round(frame.rotation / 90) % 4


def _decoded_frames(
    container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[av.VideoFrame]:
    """Yield decoded frames; a decode error ends the stream instead of raising (the file is truncated)."""
    try:
        yield from container.decode(stream)
    except av.FFmpegError as exc:
        logger.warning("video decoding stopped early: %s", exc)


def probe_video(path: PathLike) -> VideoInfo:
    """Read size, fps, frame count and duration from the container, decoding only the first frame.

    Decoding one frame (a few milliseconds) proves the stream is really decodable and gives the
    display rotation, which lives in frame side data.
    """
    with _open_video_stream(path) as (container, stream):
        fps = _frame_rate(stream)
        first = next(_decoded_frames(container, stream), None)
        if first is None:
            raise VideoDecodeError("not a decodable video: the video has no frames")

        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base

        num_frames = stream.frames
        if num_frames <= 0:
            # Matroska/WebM and some other containers do not store a frame count: estimate it from the
            # duration rather than decoding everything (probing must stay cheap).
            num_frames = max(1, round(duration * fps))
        if duration <= 0:
            duration = num_frames / float(fps)

        width, height = first.width, first.height
        if _quarter_turns(first) % 2:
            width, height = height, width
        return VideoInfo(width=width, height=height, fps=float(fps), num_frames=num_frames, duration=duration)


def read_video(path: PathLike, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode up to ``max_frames`` frames as uint8 RGB ``(F, H, W, 3)`` and return them with the average fps.

    Frames are rotated upright when the container carries a display rotation. A truncated file returns
    the frames that could be decoded; ``VideoDecodeError`` is raised only when there are none.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    frames: list[np.ndarray] = []
    with _open_video_stream(path) as (container, stream):
        fps = float(_frame_rate(stream))
        size: tuple[int, int] | None = None
        for frame in _decoded_frames(container, stream):
            if size is None:
                size = (frame.width, frame.height)
            # Forcing the first frame's size keeps the array rectangular if the stream changes size mid-way.
            rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
            turns = _quarter_turns(frame)
            frames.append(np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb)
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VideoDecodeError("not a decodable video: the video has no frames")
    return np.stack(frames), fps


def read_image(path: PathLike, *, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Decode an image as uint8 RGB ``(H, W, 3)``, upright according to its EXIF orientation.

    Transparent pixels are composited over ``background``. White matches the canvas VACE puts reference
    images on; pass black for masks drawn as white strokes on a transparent layer.
    """
    try:
        with Image.open(os.fspath(path), formats=IMAGE_FORMATS) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
                canvas = Image.new("RGBA", upright.size, (*background, 255))
                rgb = Image.alpha_composite(canvas, upright.convert("RGBA")).convert("RGB")
            else:
                rgb = upright.convert("RGB")
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"the image is too large to process: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "not a decodable image: supported formats are " + ", ".join(IMAGE_FORMATS)
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's plugins raise all of these
        raise ImageDecodeError(f"not a decodable image: {exc}") from exc
    return np.asarray(rgb, dtype=np.uint8)


# --------------------------------------------------------------------------------------------- encoding


def _exact_rate(fps: float | Fraction) -> Fraction:
    """Turn an fps into the rational the container stores: 16 stays 16/1, 29.97002997 becomes 30000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not math.isfinite(fps):
            raise ValueError(f"fps must be a finite number, got {fps}")
        rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def _even_sized(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one replicated edge row/column, since yuv420p needs even dimensions.

    Padding (rather than cropping) keeps every input pixel; the duplicated edge line is invisible.
    """
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _to_video_frame(rgb: np.ndarray) -> av.VideoFrame:
    """One RGB image as a BT.709 yuv420p frame (the conversion is explicit so the colour tags are true)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)


def _encode(frames: np.ndarray, rate: Fraction, path: Path, crf: int, preset: str = "medium") -> None:
    """Encode frames into ``path`` as H.264 MP4 with the moov atom up front (+faststart) for streaming."""
    with av.open(
        str(path), mode="w", format="mp4", container_options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}  # libx264's own preset names
        # Tag BT.709 limited range so browsers do not guess the colour matrix.
        codec = stream.codec_context
        codec.colorspace = codec.color_primaries = codec.color_trc = 1  # AVCOL_*_BT709
        codec.color_range = 1  # AVCOL_RANGE_MPEG
        for index, rgb in enumerate(frames):
            frame = _to_video_frame(rgb)
            frame.pts = index  # the codec time base is 1/rate, so pts counts frames
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _fsync_path(path: Path) -> None:
    """Flush a file or directory to disk (directories: so the rename itself survives a crash)."""
    flags = os.O_RDONLY
    if path.is_dir():
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # some platforms cannot open directories; durability is best effort there
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_mp4(frames: np.ndarray, fps: float | Fraction, dest: PathLike, crf: int = 18,
              preset: str = "medium") -> None:
    """Write uint8 RGB frames ``(F, H, W, 3)`` to ``dest`` as H.264 yuv420p MP4, atomically.

    The video is encoded into a temporary file beside ``dest``, flushed, then renamed over ``dest``:
    readers see either the old file (or none) or the complete new one. On any error the temporary
    file is removed. Odd sizes are padded by one replicated edge pixel (see ``_even_sized``).
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with no frames")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 and 51, got {crf}")
    rate = _exact_rate(fps)
    dest = Path(dest)

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _encode(_even_sized(frames), rate, tmp, crf, preset)
        _fsync_path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the file store may be served by another user
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(dest.parent)
