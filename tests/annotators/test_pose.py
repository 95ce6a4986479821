from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.pose_detect import load_openpose_body, poses_from_openpose
from preprocessors.annotators.pose_render import (
    BODY_COLORS,
    BODY_LIMBS,
    HAND_EDGE_COLORS,
    HAND_EDGES,
    LIMB_ALPHA,
    Pose,
    render_pose_video,
    render_poses,
    vace_canvas_size,
)
from preprocessors.annotators.tiny import build_tiny_openpose_body

H, W = 200, 300


def _body(points: dict[int, tuple[float, float, float]]) -> np.ndarray:
    body = np.zeros((18, 3), dtype=np.float32)
    for i, (x, y, c) in points.items():
        body[i] = (x / W, y / H, c)
    return body


def _render(poses, **kwargs) -> np.ndarray:
    # OpenPose's own palette: the tests below compare against BODY_COLORS as listed.
    return render_poses(poses, H, W, vace_colors=False, **kwargs)


def test_limb_midpoint_has_limb_colour_and_joints_have_joint_colour():
    # Neck (1) at (100, 50) and right shoulder (2) at (180, 50): limb 0 runs between them.
    img = _render([Pose(_body({1: (100, 50, 0.9), 2: (180, 50, 0.8)}))])
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert BODY_LIMBS[0] == (1, 2)
    expected_limb = [int(c * LIMB_ALPHA) for c in BODY_COLORS[0]]
    assert img[50, 140].tolist() == expected_limb == [153, 0, 0]
    assert img[50, 100].tolist() == list(BODY_COLORS[1])  # joints are drawn over limbs, at full colour
    assert img[50, 180].tolist() == list(BODY_COLORS[2])
    # Black everywhere away from the limb (half width 4, joint radius 4).
    drawn = img.any(axis=2)
    ys, xs = np.nonzero(drawn)
    assert ys.min() >= 50 - 4 and ys.max() <= 50 + 4 and xs.min() >= 100 - 4 and xs.max() <= 180 + 4
    assert not drawn[:40].any() and not drawn[60:].any()


def test_vace_colours_swap_red_and_blue():
    pose = Pose(_body({1: (100, 50, 0.9), 2: (180, 50, 0.8)}))
    img = render_poses([pose], H, W)  # the default: VACE's channel order
    assert img[50, 140].tolist() == [0, 0, 153]  # limb 0, OpenPose's dimmed red, comes out blue
    assert img[50, 100].tolist() == list(BODY_COLORS[1])[::-1] == [0, 85, 255]
    np.testing.assert_array_equal(img, _render([pose])[:, :, ::-1])


def test_low_confidence_keypoint_draws_nothing():
    body = _body({1: (100, 50, 0.9), 2: (180, 50, 0.29)})
    img = _render([Pose(body)])
    assert img[50, 140].tolist() == [0, 0, 0]  # no limb
    assert img[50, 180].tolist() == [0, 0, 0]  # no joint
    assert img[50, 100].tolist() == list(BODY_COLORS[1])
    assert not _render([Pose(_body({2: (180, 50, 0.1)}))]).any()
    assert not _render([Pose(_body({2: (180, 50, 0.3)}))]).any()  # body points need a score above 0.3


def test_joints_of_every_person_are_drawn_after_every_limb():
    # Person A's nose (0) at (150, 100); person B's neck-r-shoulder limb runs through it. DWPose draws all
    # limbs, dims them, then all joints: A's nose stays on top.
    a = Pose(_body({0: (150, 100, 0.9)}))
    b = Pose(_body({1: (100, 100, 0.9), 2: (200, 100, 0.9)}))
    for order in ([a, b], [b, a]):
        img = _render(order)
        assert img[100, 150].tolist() == list(BODY_COLORS[0])
        assert img[100, 150 + 6].tolist() == [int(c * LIMB_ALPHA) for c in BODY_COLORS[0]]


def test_face_points_are_white_disks_of_radius_3():
    face = np.zeros((68, 3), dtype=np.float32)
    face[0] = (150 / W, 100 / H, 0.9)
    face[1] = (20 / W, 30 / H, 0.3)  # VACE keeps face points from 0.3 up
    face[2] = (60 / W, 60 / H, 0.29)
    face[3] = (0.0, 50 / H, 1.0)  # DWPose skips points on the first pixel column
    img = _render([Pose(_body({}), face=face)])
    ys, xs = np.nonzero(img.any(axis=2))
    assert (img[ys, xs] == 255).all()  # white, nothing else
    for cx, cy in ((150, 100), (20, 30)):
        near = (np.abs(xs - cx) <= 5) & (np.abs(ys - cy) <= 5)
        dist = np.hypot(xs[near] - cx, ys[near] - cy)
        assert near.sum() == 29 and dist.max() == 3.0  # OpenCV's filled circle of radius 3
        assert img[cy, cx + 3].all() and not img[cy, cx + 4].any() and not img[cy + 3, cx + 3].any()
    assert len(ys) == 2 * 29  # the 0.29 point and the one on column 0 are not drawn
    assert not _render([Pose(_body({}), face=face)], draw_face=False).any()


def test_hands_are_drawn_only_when_asked():
    hands = np.zeros((2, 21, 3), dtype=np.float32)
    hands[0, 0] = (50 / W, 150 / H, 0.9)  # left wrist
    hands[0, 1] = (90 / W, 150 / H, 0.9)  # left thumb, first joint: bone 0 links them
    hands[1, 5] = (250 / W, 20 / H, 0.9)  # a right-hand point without a drawn neighbour
    pose = Pose(_body({}), hands=hands)
    assert not _render([pose]).any()  # VACE's pose task draws body + face only
    img = _render([pose], draw_hands=True)
    assert HAND_EDGES[:5] == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5))
    assert HAND_EDGE_COLORS[0] == (255, 0, 0)
    assert img[150, 70].tolist() == [255, 0, 0]  # the bone's middle (2 px wide)
    assert img[153, 70].tolist() == [0, 0, 0]
    for x, y in ((50, 150), (90, 150), (250, 20)):
        assert img[y, x].tolist() == [0, 0, 255]  # points over the bone
    assert img[20, 250 + 4].tolist() == [0, 0, 255] and not img[20, 250 + 5].any()


def test_vace_canvas_size_and_resize():
    assert vace_canvas_size(480, 832) == (1024, 1792)
    assert vace_canvas_size(720, 1280) == (1024, 1792)
    assert vace_canvas_size(832, 480) == (1792, 1024)
    assert vace_canvas_size(512, 512) == (1024, 1024)
    h, w = 480, 832
    body = np.zeros((18, 3), dtype=np.float32)
    body[1], body[2] = (0.25, 0.5, 0.9), (0.75, 0.5, 0.9)  # a horizontal limb across the middle
    pose = Pose(body)
    big = render_poses([pose], 1024, 1792, vace_colors=False)
    small = render_poses([pose], h, w, vace_colors=False, canvas_short_side=1024)
    np.testing.assert_array_equal(small, cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA))
    direct = render_poses([pose], h, w, vace_colors=False)
    column = w // 2
    # VACE draws 9 px wide on the 1024 canvas, so about 4 px at 480p, where direct drawing gives 9.
    assert direct[:, column].any(axis=1).sum() == 9
    assert 3 <= small[:, column].any(axis=1).sum() <= 6


def test_empty_and_video():
    video = render_pose_video([[], [Pose(_body({0: (10, 10, 1.0)}))]], H, W, vace_colors=False)
    assert video.shape == (2, H, W, 3)
    assert not video[0].any()
    assert video[1, 10, 10].tolist() == list(BODY_COLORS[0])


def test_poses_from_openpose_normalises_and_marks_missing():
    candidate = np.array([[50.0, 20.0, 0.7, 0], [150.0, 80.0, 0.5, 1]])
    person = -np.ones(20)
    person[0], person[1], person[18], person[19] = 0, 1, 1.2, 2
    (pose,) = poses_from_openpose(candidate, person[None], height=100, width=200)
    assert pose.body.shape == (18, 3) and pose.body.dtype == np.float32
    np.testing.assert_allclose(pose.body[0], [0.25, 0.2, 0.7])
    np.testing.assert_allclose(pose.body[1], [0.75, 0.8, 0.5])
    assert (pose.body[2:, 2] == 0).all()


@pytest.fixture(scope="module")
def detector(tiny_dir):
    return load_openpose_body(build_tiny_openpose_body(tiny_dir / "openpose"), device="cpu")


def test_random_body_model_loads_and_runs_on_a_photo(detector):
    photo = skimage.data.astronaut()[::2, ::2]  # 256x256 RGB: the network input size does not depend on it
    frames = np.stack([photo])
    poses = detector.detect_video(frames)
    assert isinstance(poses, list) and len(poses) == 1
    for pose in poses[0]:  # random weights: usually nobody, but the structure must hold
        assert isinstance(pose, Pose) and pose.body.shape == (18, 3)
        assert ((pose.body[:, :2] >= 0) & (pose.body[:, :2] <= 1)).all()
    video = render_pose_video(poses, *frames.shape[1:3])
    assert video.shape == frames.shape and video.dtype == np.uint8


def test_missing_checkpoint(tmp_path):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_openpose_body(tmp_path)
