from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.pose_detect import load_openpose_body, poses_from_openpose
from preprocessors.annotators.pose_render import (
    BODY_COLORS,
    BODY_LIMBS,
    LIMB_ALPHA,
    Pose,
    render_pose_video,
    render_poses,
)
from preprocessors.annotators.tiny import build_tiny_openpose_body

H, W = 200, 300


def _body(points: dict[int, tuple[float, float, float]]) -> np.ndarray:
    body = np.zeros((18, 3), dtype=np.float32)
    for i, (x, y, c) in points.items():
        body[i] = (x / W, y / H, c)
    return body


def test_limb_midpoint_has_limb_colour_and_joints_have_joint_colour():
    # Neck (1) at (100, 50) and right shoulder (2) at (180, 50): limb 0 runs between them.
    img = render_poses([Pose(_body({1: (100, 50, 0.9), 2: (180, 50, 0.8)}))], H, W)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert BODY_LIMBS[0] == (1, 2)
    expected_limb = [int(c * LIMB_ALPHA) for c in BODY_COLORS[0]]
    assert img[50, 140].tolist() == expected_limb
    assert img[50, 100].tolist() == list(BODY_COLORS[1])  # joints are drawn over limbs, at full colour
    assert img[50, 180].tolist() == list(BODY_COLORS[2])
    # Black everywhere away from the limb (half width 4, joint radius 4).
    drawn = img.any(axis=2)
    ys, xs = np.nonzero(drawn)
    assert ys.min() >= 50 - 4 and ys.max() <= 50 + 4 and xs.min() >= 100 - 4 and xs.max() <= 180 + 4
    assert not drawn[:40].any() and not drawn[60:].any()


def test_low_confidence_keypoint_draws_nothing():
    body = _body({1: (100, 50, 0.9), 2: (180, 50, 0.29)})
    img = render_poses([Pose(body)], H, W)
    assert img[50, 140].tolist() == [0, 0, 0]  # no limb
    assert img[50, 180].tolist() == [0, 0, 0]  # no joint
    assert img[50, 100].tolist() == list(BODY_COLORS[1])
    assert not render_poses([Pose(_body({2: (180, 50, 0.1)}))], H, W).any()


def test_face_points_are_white_and_thresholded():
    face = np.array([[0.5, 0.5, 0.9], [0.1, 0.1, 0.2]], dtype=np.float32)
    img = render_poses([Pose(_body({}), face=face)], H, W)
    assert img[100, 150].tolist() == [255, 255, 255]
    assert not img[20, 30].any()
    assert not render_poses([Pose(_body({}), face=face)], H, W, draw_face=False).any()


def test_empty_and_video():
    video = render_pose_video([[], [Pose(_body({0: (10, 10, 1.0)}))]], H, W)
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
