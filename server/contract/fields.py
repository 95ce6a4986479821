"""Field types shared by fal's request models (server/contract/inputs.py): the option lists and URL fields.

Imported by the API process: keep it free of torch and other heavy imports.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, ValidationInfo

# Literal (not Enum) so OpenAPI shows the allowed values inline next to the field, as fal's schema does, and
# the parsed values are plain strings the worker can compare and log without `.value`.
Task = Literal["depth", "pose", "inpainting", "outpainting", "reframe"]
Resolution = Literal["auto", "240p", "360p", "480p", "580p", "720p"]
AspectRatio = Literal["auto", "16:9", "9:16", "1:1"]
InterpolatorModel = Literal["rife", "film"]
Sampler = Literal["unipc", "dpm++", "euler"]
Acceleration = Literal["none", "low", "regular"]  # pipelines/step_policy.py's step cache policies
TransparencyMode = Literal["content_aware", "white", "black"]
VideoQuality = Literal["low", "medium", "high", "maximum"]
VideoWriteMode = Literal["fast", "balanced", "small"]

TASKS: tuple[str, ...] = get_args(Task)
RESOLUTIONS: tuple[str, ...] = get_args(Resolution)
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
INTERPOLATOR_MODELS: tuple[str, ...] = get_args(InterpolatorModel)
SAMPLERS: tuple[str, ...] = get_args(Sampler)
ACCELERATIONS: tuple[str, ...] = get_args(Acceleration)

# fal's current default: the seed page's text with three letterboxing terms in front
# (docs: fal-current-schema.md). A request can still send the seed's text.
SEED_NEGATIVE_PROMPT = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, picture, "
    "still, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
    "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, malformed limbs, "
    "fused fingers, still picture, cluttered background, three legs, many people in the background, "
    "walking backwards"
)
DEFAULT_NEGATIVE_PROMPT = "letterboxing, borders, black bars, " + SEED_NEGATIVE_PROMPT

# ------------------------------------------------------------------------------------------------------------
# URL fields
# ------------------------------------------------------------------------------------------------------------

_URL_SCHEMES = ("http", "https", "data")


def _preview(value: str, limit: int = 60) -> str:
    # data: URIs can be megabytes long; never echo one whole into an error message.
    return value if len(value) <= limit else value[:limit] + "..."


def _check_url(value: str, info: ValidationInfo) -> str:
    """Check only the scheme and basic shape; fetching (and its limits) is the worker's job."""
    name = info.field_name or "URL"
    url = value.strip()
    if not url:
        raise ValueError(f"{name} is empty; send an http(s) URL or a data: URI")
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() not in _URL_SCHEMES:
        raise ValueError(f"{name} must be an http(s) URL or a data: URI, got {_preview(url)!r}")
    if scheme.lower() == "data":
        if "," not in rest:
            raise ValueError(f"{name} is not a valid data: URI (expected 'data:<mediatype>[;base64],<data>')")
        return url
    try:
        host = urlsplit(url).netloc
    except ValueError as exc:  # e.g. an unbalanced '[' in an IPv6 host
        raise ValueError(f"{name} is not a valid URL ({exc}): {_preview(url)!r}") from exc
    if not host:
        raise ValueError(f"{name} has no host: {_preview(url)!r}")
    return url


# Surrounding whitespace is stripped; the value stays a plain string (http(s) URL or data: URI).
InputUrl = Annotated[str, AfterValidator(_check_url)]


def _empty_is_absent(value: object) -> object:
    # fal's own example sends `video_url: ""` on the root, where the field is optional, and form-based
    # clients send "" for an untouched URL box: in an optional URL field it means "not given".
    return None if isinstance(value, str) and not value.strip() else value


# An optional URL field: null or "" is "not given"; anything else is checked as InputUrl.
OptionalInputUrl = Annotated[InputUrl | None, BeforeValidator(_empty_is_absent)]
