"""Output size and length rules: fal's resolution/aspect-ratio presets and the pipeline's 4k+1 frame grid."""

from __future__ import annotations

# (width, height) for landscape 16:9. Every side is a multiple of 16 because WanVACEPipeline rejects
# anything else (VAE x8 downsampling times the 2x2 patch). 580p is 1024x576: 580 is not a multiple of 16.
_LANDSCAPE: dict[str, tuple[int, int]] = {
    "240p": (416, 240),
    "360p": (640, 352),
    "480p": (832, 480),
    "580p": (1024, 576),
    "720p": (1280, 720),
}

RESOLUTION_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    "16:9": dict(_LANDSCAPE),
    "9:16": {name: (h, w) for name, (w, h) in _LANDSCAPE.items()},
    "1:1": {
        "240p": (240, 240),
        "360p": (352, 352),
        "480p": (480, 480),
        "580p": (576, 576),
        "720p": (720, 720),
    },
}

AUTO_ASPECT_RATIO = "auto"


def target_size(resolution: str, aspect_ratio: str, input_width: int, input_height: int) -> tuple[int, int]:
    """The (width, height) to generate at.

    ``aspect_ratio="auto"`` follows the input's orientation: landscape when ``width >= height``, portrait
    otherwise. Square inputs count as landscape (16:9): a tie has to go one way, and 16:9 is the default.
    """
    if aspect_ratio == AUTO_ASPECT_RATIO:
        if input_width <= 0 or input_height <= 0:
            raise ValueError(f"input size must be positive, got {input_width}x{input_height}")
        aspect_ratio = "16:9" if input_width >= input_height else "9:16"
    sizes = RESOLUTION_SIZES.get(aspect_ratio)
    if sizes is None:
        choices = ", ".join([*RESOLUTION_SIZES, AUTO_ASPECT_RATIO])
        raise ValueError(f"unknown aspect_ratio {aspect_ratio!r}; expected one of: {choices}")
    if resolution not in sizes:
        raise ValueError(f"unknown resolution {resolution!r}; expected one of: {', '.join(sizes)}")
    return sizes[resolution]


def pipeline_num_frames(n: int) -> int:
    """The smallest ``4k+1 >= n``.

    WanVACEPipeline silently rounds other counts *down* (and then crashes if the control video is
    longer), so we round up ourselves, pad the control video to this length and trim the output back.
    """
    if n < 1:
        raise ValueError(f"frame count must be at least 1, got {n}")
    return (n + 2) // 4 * 4 + 1
