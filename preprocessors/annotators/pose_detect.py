"""Body keypoints with controlnet-aux's OpenPose body network (`body_pose_model.pth`): the optional pose
backend (`VACE_POSE_MODEL=openpose`); the default is DWPose (`dwpose.py`), VACE's own body + face annotator.

Detection only: it returns `Pose` objects, and `pose_render` draws them as VACE does. controlnet-aux's `Body`
class loads the checkpoint (the real state-dict names, e.g. `conv1_1.weight`, `Mconv7_stage6_L2.bias`) and
runs the network plus OpenPose's part-affinity grouping. That code handles one image at a time, so frames
are not batched; the network runs on `device`, the grouping on the CPU. There are no face points: OpenPose's
face network (`facenet.pth`) is another full-size checkpoint and is not loaded (DWPose gives them).

Note on scores: OpenPose reports the heatmap peak as a keypoint's score, and only keeps peaks above 0.1;
the renderer's 0.3 threshold (VACE's, set for DWPose scores) therefore drops somewhat more than
controlnet-aux's own drawing would. Pass `threshold=0.1` to `annotate` to draw all of them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from preprocessors.annotators._common import check_frames, require_folder, resolve_device
from preprocessors.annotators.pose_render import (
    DEFAULT_THRESHOLD,
    NUM_BODY_KEYPOINTS,
    VACE_CANVAS_SHORT_SIDE,
    Pose,
    render_pose_video,
)

BODY_FILE = "body_pose_model.pth"


def _short_side_to(frame: np.ndarray, target: int) -> np.ndarray:
    h, w = frame.shape[:2]
    scale = target / min(h, w)
    if scale == 1:
        return frame
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def poses_from_openpose(candidate: np.ndarray, subset: np.ndarray, height: int, width: int) -> list[Pose]:
    """OpenPose's (candidate, subset) arrays in pixels -> one Pose per person, in fractions of the frame."""
    poses = []
    for person in subset:
        body = np.zeros((NUM_BODY_KEYPOINTS, 3), dtype=np.float32)
        for part, index in enumerate(person[:NUM_BODY_KEYPOINTS].astype(int)):
            if index >= 0:
                x, y, score = candidate[index][:3]
                body[part] = (x / width, y / height, score)
        poses.append(Pose(body=body))
    return poses


class OpenPoseBodyDetector:
    def __init__(self, body, detect_resolution: int = 512) -> None:
        self.body = body  # controlnet_aux.open_pose.body.Body
        self.detect_resolution = detect_resolution

    def detect(self, frame: np.ndarray) -> list[Pose]:
        """One uint8 RGB (H, W, 3) frame -> the people found in it."""
        check_frames(frame[None])
        image = _short_side_to(frame, self.detect_resolution)
        bgr = np.ascontiguousarray(image[:, :, ::-1])  # the network was trained on OpenCV's BGR order
        candidate, subset = self.body(bgr)
        return poses_from_openpose(np.asarray(candidate), np.asarray(subset), *image.shape[:2])

    def detect_video(self, frames: np.ndarray) -> list[list[Pose]]:
        check_frames(frames)
        return [self.detect(frame) for frame in frames]

    def annotate(self, frames: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
        """uint8 (F, H, W, 3) video -> uint8 (F, H, W, 3) pose video at the same size (VACE's drawing)."""
        poses = self.detect_video(frames)
        return render_pose_video(poses, frames.shape[1], frames.shape[2], threshold,
                                 canvas_short_side=VACE_CANVAS_SHORT_SIDE)


def load_openpose_body(folder: Path, device=None, detect_resolution: int = 512) -> OpenPoseBodyDetector:
    """Load `body_pose_model.pth` from `folder` (e.g. a local copy of lllyasviel/Annotators)."""
    folder = require_folder(folder, "OpenPose body", (BODY_FILE,))
    # Imported here: controlnet-aux's package import takes seconds and pulls in many optional models.
    from controlnet_aux.open_pose.body import Body

    body = Body(str(folder / BODY_FILE)).to(resolve_device(device))
    return OpenPoseBodyDetector(body, detect_resolution)
