"""Draw OpenPose-style skeletons (18 body keypoints, 68 face points, optional hands) on a black canvas.

Pure numpy/OpenCV, independent of any detector. It reproduces the drawing of VACE's pose annotator
(`vace/annotators/pose.py` with DWPose's `util.draw_bodypose/draw_handpose/draw_facepose`):

- Body, COCO-18 order (nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip,
  r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear): 17 limbs as filled ellipses (half
  width 4), all people's limbs first, then the whole canvas times 0.6, then the joints (radius 4) at full
  colour. A keypoint is drawn when its score is above the threshold (VACE: 0.3), a limb when both ends are.
- Hands (off by default: VACE's `pose` task draws body + face only): 20 bones per hand, 2 px lines coloured
  around the hue circle, and points of radius 4 in (0, 0, 255).
- Face: one white dot of radius 3 per point. Face and hand points count from a score of 0.3 up (VACE marks
  those below as missing) and, as in DWPose, are skipped on the first pixel row and column.
- Channel order: VACE hands DWPose BGR frames and flips the drawn canvas (`[..., ::-1]`) before saving it
  as RGB, so VACE's pose videos show OpenPose's palette with red and blue swapped (blue shoulders, red
  neck-to-nose, yellow-to-red left leg; the task figure in VACE's README shows exactly that).
  `vace_colors=True` (the default) does the same; False gives OpenPose's own colours.
- Size: VACE detects and draws on the frame resized to a short side of 1024 px (sides rounded to multiples
  of 64) and resizes the drawing back to the frame (INTER_AREA when shrinking, Lanczos when enlarging), so
  its lines are thinner than 4 px at 480p. `canvas_short_side=1024` does the same; None draws directly at
  the output size (the pixel-exact tests use that).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

NUM_BODY_KEYPOINTS = 18
NUM_FACE_KEYPOINTS = 68
NUM_HAND_KEYPOINTS = 21
# 0-based keypoint index pairs, in OpenPose's drawing order (the two ear-shoulder links are not drawn).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# OpenPose's palette (RGB); colour i is used for limb i and for keypoint i.
BODY_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
# Hand bones: wrist (0) to each finger's four points, thumb first.
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else 4 * finger + j, 4 * finger + j + 1) for finger in range(5) for j in range(4)
)
# Bone i's colour: hue i/20 at full saturation and value (what DWPose computes with matplotlib).
HAND_EDGE_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(round(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
    for i in range(len(HAND_EDGES))
)
HAND_POINT_COLOR = (0, 0, 255)
LIMB_ALPHA = 0.6  # the limbs are dimmed to 60 % (the canvas is multiplied before the joints are drawn)
LIMB_HALF_WIDTH = 4
JOINT_RADIUS = 4
FACE_RADIUS = 3
FACE_COLOR = (255, 255, 255)
HAND_LINE_WIDTH = 2
HAND_RADIUS = 4
DEFAULT_THRESHOLD = 0.3
VACE_CANVAS_SHORT_SIDE = 1024  # VACE's RESIZE_SIZE for the pose annotator
# DWPose dims with `(canvas * 0.6).astype(np.uint8)`; the same values as a table (4x faster on big canvases).
_DIM = (np.arange(256) * LIMB_ALPHA).astype(np.uint8)


@dataclass
class Pose:
    """One person. Coordinates are fractions of the frame width/height, so a pose renders at any size."""

    body: np.ndarray  # float32 (18, 3): x, y, confidence; confidence 0 for a keypoint not found
    face: np.ndarray | None = None  # float32 (68, 3) (OpenPose/DWPose face points) or None
    hands: np.ndarray | None = None  # float32 (2, 21, 3): left then right hand (COCO-WholeBody order) or None


def vace_canvas_size(height: int, width: int, short_side: int = VACE_CANVAS_SHORT_SIDE) -> tuple[int, int]:
    """The size VACE draws at: short side scaled to `short_side`, both sides rounded to multiples of 64."""
    k = short_side / min(height, width)
    return (max(64, int(np.round(height * k / 64.0)) * 64), max(64, int(np.round(width * k / 64.0)) * 64))


def _body_visible(body: np.ndarray, threshold: float) -> np.ndarray:
    return (body[:, 2] > threshold) & np.isfinite(body[:, :2]).all(axis=1)


def _point_pixels(points: np.ndarray, threshold: float, h: int, w: int) -> list[tuple[int, int] | None]:
    """Face/hand points -> pixel positions, None where DWPose would skip the point."""
    out: list[tuple[int, int] | None] = []
    for x, y, score in points:
        if not (score >= threshold and math.isfinite(x) and math.isfinite(y)):
            out.append(None)
            continue
        px, py = int(x * w), int(y * h)
        out.append((px, py) if px > 0 and py > 0 else None)
    return out


def _draw_bodies(canvas: np.ndarray, bodies: list[np.ndarray], threshold: float) -> np.ndarray:
    h, w = canvas.shape[:2]
    for body in bodies:
        if body.shape != (NUM_BODY_KEYPOINTS, 3):
            raise ValueError(f"body keypoints must be ({NUM_BODY_KEYPOINTS}, 3), got {body.shape}")
    visible = [_body_visible(body, threshold) for body in bodies]
    for (a, b), color in zip(BODY_LIMBS, BODY_COLORS, strict=False):
        for body, vis in zip(bodies, visible, strict=True):
            if not (vis[a] and vis[b]):
                continue
            xa, ya, xb, yb = body[a, 0] * w, body[a, 1] * h, body[b, 0] * w, body[b, 1] * h
            cx, cy = (xa + xb) / 2, (ya + yb) / 2
            length = math.hypot(xa - xb, ya - yb)
            angle = math.degrees(math.atan2(ya - yb, xa - xb))
            polygon = cv2.ellipse2Poly(
                (int(cx), int(cy)), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1
            )
            cv2.fillConvexPoly(canvas, polygon, color)
    canvas = cv2.LUT(canvas, _DIM)
    for i, color in enumerate(BODY_COLORS):
        for body, vis in zip(bodies, visible, strict=True):
            if vis[i]:
                cv2.circle(canvas, (int(body[i, 0] * w), int(body[i, 1] * h)), JOINT_RADIUS, color, -1)
    return canvas


def _draw_hand(canvas: np.ndarray, hand: np.ndarray, threshold: float) -> None:
    h, w = canvas.shape[:2]
    pixels = _point_pixels(hand, threshold, h, w)
    for (a, b), color in zip(HAND_EDGES, HAND_EDGE_COLORS, strict=True):
        if pixels[a] is not None and pixels[b] is not None:
            cv2.line(canvas, pixels[a], pixels[b], color, thickness=HAND_LINE_WIDTH)
    for point in pixels:
        if point is not None:
            cv2.circle(canvas, point, HAND_RADIUS, HAND_POINT_COLOR, thickness=-1)


def _draw_face(canvas: np.ndarray, face: np.ndarray, threshold: float) -> None:
    h, w = canvas.shape[:2]
    for point in _point_pixels(face, threshold, h, w):
        if point is not None:
            cv2.circle(canvas, point, FACE_RADIUS, FACE_COLOR, thickness=-1)


def _draw(poses: Sequence[Pose], height: int, width: int, threshold: float, draw_face: bool,
          draw_hands: bool) -> np.ndarray:
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas = _draw_bodies(canvas, [np.asarray(p.body, dtype=np.float32) for p in poses], threshold)
    if draw_hands:
        for side in range(2):  # DWPose draws every left hand, then every right hand
            for pose in poses:
                if pose.hands is not None:
                    _draw_hand(canvas, np.asarray(pose.hands, dtype=np.float32)[side], threshold)
    if draw_face:
        for pose in poses:
            if pose.face is not None:
                _draw_face(canvas, np.asarray(pose.face, dtype=np.float32), threshold)
    return canvas


def render_poses(
    poses: Sequence[Pose],
    height: int,
    width: int,
    threshold: float = DEFAULT_THRESHOLD,
    draw_face: bool = True,
    draw_hands: bool = False,
    vace_colors: bool = True,
    canvas_short_side: int | None = None,
) -> np.ndarray:
    """All people of one frame -> uint8 (H, W, 3) RGB image, black where nothing is drawn.

    `canvas_short_side` draws on VACE's larger canvas (`vace_canvas_size`) and resizes the drawing to
    (height, width) as VACE does; None draws at (height, width) directly.
    """
    if canvas_short_side is None:
        canvas = _draw(poses, height, width, threshold, draw_face, draw_hands)
    else:
        ch, cw = vace_canvas_size(height, width, canvas_short_side)
        canvas = _draw(poses, ch, cw, threshold, draw_face, draw_hands)
        enlarge = height * width > ch * cw
        canvas = cv2.resize(canvas, (width, height),
                            interpolation=cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA)
    return cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR) if vace_colors else canvas  # a channel flip


def render_pose_video(
    poses_per_frame: Sequence[Sequence[Pose]],
    height: int,
    width: int,
    threshold: float = DEFAULT_THRESHOLD,
    draw_face: bool = True,
    draw_hands: bool = False,
    vace_colors: bool = True,
    canvas_short_side: int | None = None,
) -> np.ndarray:
    """One list of poses per frame -> uint8 (F, H, W, 3)."""
    return np.stack([
        render_poses(p, height, width, threshold, draw_face, draw_hands, vace_colors, canvas_short_side)
        for p in poses_per_frame
    ])
