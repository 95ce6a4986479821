"""Draw OpenPose-style skeletons (18 body keypoints + optional face points) on a black canvas.

Pure numpy/OpenCV, independent of any detector. The limb pairs, colours and shapes are OpenPose's (COCO-18
order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip,
l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear), which is what VACE's pose annotator renders. Keypoints below
the confidence threshold (VACE: 0.3) are dropped, and so are the limbs touching them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

NUM_BODY_KEYPOINTS = 18
# 0-based keypoint index pairs, in OpenPose's drawing order (the two ear-shoulder links are not drawn).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# RGB; colour i is used for limb i and for keypoint i.
BODY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
LIMB_ALPHA = 0.6  # OpenPose blends limbs at 60 % over the canvas; on black that is colour * 0.6
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
FACE_RADIUS = 3
FACE_COLOR = (255, 255, 255)
DEFAULT_THRESHOLD = 0.3


@dataclass
class Pose:
    """One person. Coordinates are fractions of the frame width/height, so a pose renders at any size."""

    body: np.ndarray  # float32 (18, 3): x, y, confidence; confidence 0 for a keypoint not found
    face: np.ndarray | None = None  # float32 (K, 3) (68 points for OpenPose/DWPose faces) or None


def _visible(points: np.ndarray, threshold: float) -> np.ndarray:
    return (points[:, 2] >= threshold) & np.isfinite(points[:, :2]).all(axis=1)


def _draw_body(canvas: np.ndarray, body: np.ndarray, threshold: float) -> None:
    h, w = canvas.shape[:2]
    if body.shape != (NUM_BODY_KEYPOINTS, 3):
        raise ValueError(f"body keypoints must be ({NUM_BODY_KEYPOINTS}, 3), got {body.shape}")
    visible = _visible(body, threshold)
    xs, ys = body[:, 0] * w, body[:, 1] * h
    for (a, b), color in zip(BODY_LIMBS, BODY_COLORS, strict=False):
        if not (visible[a] and visible[b]):
            continue
        cx, cy = (xs[a] + xs[b]) / 2, (ys[a] + ys[b]) / 2
        length = math.hypot(xs[a] - xs[b], ys[a] - ys[b])
        angle = math.degrees(math.atan2(ys[a] - ys[b], xs[a] - xs[b]))
        polygon = cv2.ellipse2Poly(
            (int(cx), int(cy)), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, [int(c * LIMB_ALPHA) for c in color])
    for i, color in enumerate(BODY_COLORS):
        if visible[i]:
            cv2.circle(canvas, (int(xs[i]), int(ys[i])), JOINT_RADIUS, color, thickness=-1)


def _draw_face(canvas: np.ndarray, face: np.ndarray, threshold: float) -> None:
    h, w = canvas.shape[:2]
    for x, y, _ in face[_visible(face, threshold)]:
        cv2.circle(canvas, (int(x * w), int(y * h)), FACE_RADIUS, FACE_COLOR, thickness=-1)


def render_poses(
    poses: Sequence[Pose],
    height: int,
    width: int,
    threshold: float = DEFAULT_THRESHOLD,
    draw_face: bool = True,
) -> np.ndarray:
    """All people of one frame -> uint8 (H, W, 3) RGB image, black where nothing is drawn."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for pose in poses:
        _draw_body(canvas, np.asarray(pose.body, dtype=np.float32), threshold)
        if draw_face and pose.face is not None:
            _draw_face(canvas, np.asarray(pose.face, dtype=np.float32), threshold)
    return canvas


def render_pose_video(
    poses_per_frame: Sequence[Sequence[Pose]],
    height: int,
    width: int,
    threshold: float = DEFAULT_THRESHOLD,
    draw_face: bool = True,
) -> np.ndarray:
    """One list of poses per frame -> uint8 (F, H, W, 3)."""
    return np.stack([render_poses(p, height, width, threshold, draw_face) for p in poses_per_frame])
