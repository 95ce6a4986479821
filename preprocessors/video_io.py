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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
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


# Called with a stream's or a frame's (width, height) before its pixels cost memory; raises to refuse it.
SizeCheck = Callable[[int, int], None]


def _header_size(stream: av.VideoStream) -> tuple[int, int]:
    """The frame size the stream's header declares (0 when unknown), before any frame is decoded."""
    codec = stream.codec_context
    return codec.width or 0, codec.height or 0


def probe_video(path: PathLike, check_size: SizeCheck | None = None) -> VideoInfo:
    """Read size, fps, frame count and duration from the container, decoding only the first frame.

    Decoding one frame (a few milliseconds) proves the stream is really decodable and gives the
    display rotation, which lives in frame side data. ``check_size`` sees the header's size before that
    frame is decoded (a GIF's logical screen is allocated whole by the decoder: 16000x16000 is 1 GB) and the
    first frame's size after.
    """
    with _open_video_stream(path) as (container, stream):
        fps = _frame_rate(stream)
        if check_size is not None:
            check_size(*_header_size(stream))
        first = next(_decoded_frames(container, stream), None)
        if first is None:
            raise VideoDecodeError("not a decodable video: the video has no frames")
        if check_size is not None:
            check_size(first.width, first.height)

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
    the frames that could be decoded; ``VideoDecodeError`` is raised only when there are none. Every frame
    is held at full size: for user input the worker uses ``read_frames``, which keeps only what it needs.
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
            frames.append(_upright_rgb(frame, size))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise VideoDecodeError("not a decodable video: the video has no frames")
    return np.stack(frames), fps


def _upright_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """One frame as RGB at ``size`` (the stream's first frame's, so a stream that changes size mid-way still
    gives equal frames), rotated upright."""
    rgb = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def read_frames(path: PathLike, indices: Sequence[int] | np.ndarray, *, keep: Sequence[int] | None = None,
                size: tuple[int, int] | None = None, nearest: bool = False,
                check_size: SizeCheck | None = None) -> np.ndarray:
    """Decode only the frames an output needs, as uint8 RGB ``(len(keep), H, W, 3)``.

    ``indices`` holds the source frame index of each output frame, non-decreasing (preprocessors/temporal.py's
    ``fitted_indices``); ``keep`` picks which output frames to return (non-decreasing positions into
    ``indices``; default all). An index past the end of a truncated or shorter stream holds the last source
    frame any of ``indices`` reached, as ``fit_length(resample_fps(...))`` would. Frames are decoded in order
    and converted only when kept; each is scaled to ``size`` (width, height; area averaging, or
    nearest-neighbour for masks) as it is decoded, so memory holds the result and one full-size frame, never
    the clip. ``check_size`` sees the header's size before decoding and every decoded frame's size (a stream
    may change size mid-way) before its pixels are converted.
    """
    sources = np.asarray(indices, dtype=np.int64)
    slots = np.arange(len(sources)) if keep is None else np.asarray(keep, dtype=np.int64)
    if not len(slots) or sources[0] < 0 or (np.diff(sources) < 0).any() or (np.diff(slots) < 0).any():
        raise ValueError("indices and keep must be non-empty, non-negative and non-decreasing")
    kept = sources[slots]
    reached = set(sources.tolist())
    last_reached = int(sources[-1])
    out: np.ndarray | None = None
    filled = 0  # out[:filled] are set; kept is sorted, so they fill in order
    latest: av.VideoFrame | None = None  # the last source frame any index reached
    first_size: tuple[int, int] | None = None
    with _open_video_stream(path) as (container, stream):
        if check_size is not None:
            check_size(*_header_size(stream))
        for position, frame in enumerate(_decoded_frames(container, stream)):
            if check_size is not None:
                check_size(frame.width, frame.height)
            first_size = first_size or (frame.width, frame.height)
            if position in reached:
                latest = frame
            if filled < len(kept) and kept[filled] == position:
                rgb = _scaled(_upright_rgb(frame, first_size), size, nearest)
                if out is None:
                    out = np.empty((len(kept), *rgb.shape), dtype=np.uint8)
                while filled < len(kept) and kept[filled] == position:
                    out[filled] = rgb
                    filled += 1
            if position >= last_reached:
                break
        if latest is None or first_size is None:
            raise VideoDecodeError("not a decodable video: the video has no frames")
        if filled < len(kept):
            rgb = _scaled(_upright_rgb(latest, first_size), size, nearest)
            if out is None:
                out = np.empty((len(kept), *rgb.shape), dtype=np.uint8)
            out[filled:] = rgb
    if out is None:  # unreachable: `latest` is set only after a frame was converted or will be
        raise VideoDecodeError("not a decodable video: the video has no frames")
    return out


def _scaled(rgb: np.ndarray, size: tuple[int, int] | None, nearest: bool) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(rgb, size, interpolation=interpolation)


def read_image(path: PathLike, *, background: tuple[int, int, int] = (255, 255, 255),
               max_side: int | None = None) -> np.ndarray:
    """Decode an image as uint8 RGB ``(H, W, 3)``, upright according to its EXIF orientation.

    Transparent pixels are composited over ``background``. White matches the canvas VACE puts reference
    images on; pass black for masks drawn as white strokes on a transparent layer. With ``max_side`` a larger
    image is shrunk (aspect kept, area averaging) to fit a ``max_side`` square as it is decoded: JPEGs are
    decoded at a reduced scale by libjpeg itself, other formats shrunk right after decoding.
    """
    try:
        with Image.open(os.fspath(path), formats=IMAGE_FORMATS) as img:
            if max_side is not None:
                img.draft(None, (max_side, max_side))  # JPEG only: a power-of-two scale, still >= max_side
            img.load()
            upright: Image.Image = img
            ImageOps.exif_transpose(upright, in_place=True)
            alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
            if max_side is not None and max(upright.size) > max_side:
                # Shrink first, so only one full-size copy (the decoded image) is ever held; palette and
                # other modes are converted first, since Pillow resizes them with nearest-neighbour only.
                if upright.mode not in ("RGB", "RGBA", "L", "LA"):
                    upright = upright.convert("RGBA" if alpha else "RGB")
                upright.thumbnail((max_side, max_side), Image.Resampling.BOX)  # in place, aspect kept
            if alpha:
                canvas = Image.new("RGBA", upright.size, (*background, 255))
                rgb = Image.alpha_composite(canvas, upright.convert("RGBA")).convert("RGB")
            else:
                rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
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
