"""Where each annotator's files live under the annotators folder (e.g. weights/annotators/).

One sub-folder per model, named here once so `vace download --annotators`, the loaders' callers and the
tiny builders agree. weights/README.md lists the source repository and files of each.
"""

from __future__ import annotations

DEPTH_ANYTHING = "depth-anything-v2-large"
MIDAS = "dpt-hybrid-midas"
DWPOSE = "dwpose"
OPENPOSE = "openpose"
FILM = "film"
RIFE = "rife"
NSFW = "nsfw-image-detection"
PROMPT_LLM = "qwen2.5-3b-instruct"

ALL = (DEPTH_ANYTHING, MIDAS, DWPOSE, OPENPOSE, FILM, RIFE, NSFW, PROMPT_LLM)
