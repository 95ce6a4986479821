"""DWPose on onnxruntime: the decoding steps on hand-made arrays, then the tiny ONNX files end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import skimage.data

from preprocessors.annotators._common import AnnotatorNotFoundError
from preprocessors.annotators.dwpose import (
    DETECTOR_FILE,
    POSE_FILE,
    POSE_MEAN,
    POSE_STD,
    DWPoseDetector,
    crop_matrix,
    crop_transform,
    decode_simcc,
    decode_yolox,
    letterbox,
    load_dwpose,
    nms,
    person_boxes,
    pose_input,
    run_batched,
    session_providers,
    to_frame,
    wholebody_to_pose,
)
from preprocessors.annotators.pose_render import Pose, vace_canvas_size
from preprocessors.annotators.tiny_dwpose import build_tiny_dwpose

# --- YOLOX ----------------------------------------------------------------------------------------------


def _raw(n: int = 8400) -> np.ndarray:
    return np.zeros((n, 85), dtype=np.float32)


def test_yolox_decode_uses_the_cell_and_stride():
    pred = _raw()
    # Stride 16 grid (40x40) starts after the 80x80 one; cell x=3, y=2.
    i = 80 * 80 + 2 * 40 + 3
    pred[i, :4] = (0.5, 0.25, math.log(4), math.log(2))
    pred[i, 4], pred[i, 5], pred[i, 6] = 0.9, 0.8, 1.0
    # Stride 32 grid: the last cell, (19, 19).
    pred[-1, :4] = (0.0, 0.0, 0.0, 0.0)
    pred[-1, 4], pred[-1, 6] = 1.0, 1.0  # sure of an object, but class 1 (bicycle), not a person
    boxes, scores = decode_yolox(pred, (640, 640))
    # Centre ((0.5 + 3) * 16, (0.25 + 2) * 16) = (56, 36); size (4 * 16, 2 * 16) = (64, 32).
    np.testing.assert_allclose(boxes[i], [24, 20, 88, 52], rtol=0, atol=1e-4)
    assert scores[i] == pytest.approx(0.72)
    np.testing.assert_allclose(boxes[-1], [19 * 32 - 16, 19 * 32 - 16, 19 * 32 + 16, 19 * 32 + 16])
    assert scores[-1] == 0
    # Stride 8, cell x=5, y=1: index 85.
    np.testing.assert_allclose(boxes[85], [5 * 8 - 4, 8 - 4, 5 * 8 + 4, 8 + 4])
    with pytest.raises(ValueError, match="8400"):
        decode_yolox(_raw(100), (640, 640))


def test_nms_counts_pixels_inclusively():
    boxes = np.array([[0, 0, 9, 9], [1, 0, 10, 9], [5, 0, 14, 9], [100, 100, 120, 130]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.5], dtype=np.float32)
    # Box 1 overlaps box 0 by 90 of 110 pixels (IoU 0.82): suppressed. Box 2 overlaps box 0 by 50 of 150
    # (1/3) and box 1 is gone: kept. Box 3 is elsewhere.
    assert nms(boxes, scores, 0.45).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.3).tolist() == [0, 3]
    assert nms(boxes[::-1].copy(), scores[::-1].copy(), 0.45).tolist() == [3, 1, 0]  # best first
    # Inclusive: 10x10 boxes sharing 6 columns overlap by 60 of 140 pixels, IoU 0.43 (not 45/117 = 0.38).
    pair, two = np.array([[0, 0, 9, 9], [4, 0, 13, 9]], dtype=np.float32), np.array([0.9, 0.8])
    assert nms(pair, two, 0.4).tolist() == [0] and nms(pair, two, 0.5).tolist() == [0, 1]


def test_person_boxes_threshold_nms_and_scale_back():
    pred = _raw()
    centre = 80 * 80 + 40 * 40  # first stride-32 cell (0, 0): centre (0, 0) plus offsets
    for k, (dx, score) in enumerate(((5.0, 0.95), (5.1, 0.9), (12.0, 0.6), (15.0, 0.29))):
        pred[centre + k, :4] = (dx - k, 3.0, math.log(2), math.log(4))  # 64x128 boxes
        pred[centre + k, 4], pred[centre + k, 5] = score, 1.0
    boxes = person_boxes(pred, (640, 640), ratio=2.0)
    # dx 5.0 and 5.1 overlap almost fully: one box. dx 12 is far: kept. The 0.29 one is below 0.3.
    expected = np.array([[5 * 32 - 32, 3 * 32 - 64, 5 * 32 + 32, 3 * 32 + 64],
                         [12 * 32 - 32, 3 * 32 - 64, 12 * 32 + 32, 3 * 32 + 64]]) / 2.0
    np.testing.assert_allclose(boxes, expected, atol=1e-3)
    assert person_boxes(_raw(), (640, 640), 1.0).shape == (0, 4)


def test_letterbox_pads_with_114_at_the_bottom_right():
    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[..., 0] = 10  # B
    frame[..., 2] = 200  # R
    image, ratio = letterbox(frame, (640, 640))
    assert ratio == 3.2 and image.shape == (3, 640, 640) and image.dtype == np.float32
    assert (image[0, :320] == 10).all() and (image[2, :320] == 200).all()  # no normalisation, channels kept
    assert (image[:, 320:] == 114).all()


# --- RTMPose --------------------------------------------------------------------------------------------

SIZE = (384, 288)  # (h, w) of the pose input


def test_crop_is_the_box_enlarged_to_288_by_384():
    # A 60x200 box: x 1.25 -> 75x250, then widened to 250 * 0.75 = 187.5 to reach 288:384.
    centre, scale = crop_transform(np.array([100, 50, 160, 250]), SIZE)
    np.testing.assert_allclose(centre, [130, 150])
    np.testing.assert_allclose(scale, [187.5, 250])
    # A wide box is heightened instead.
    _, wide = crop_transform(np.array([0, 0, 300, 100]), SIZE)
    np.testing.assert_allclose(wide, [375, 500])
    m = crop_matrix(centre, scale, SIZE)
    corners = np.array([[130 - 93.75, 150 - 125, 1], [130 + 93.75, 150 + 125, 1], [130, 150, 1]])
    np.testing.assert_allclose(corners @ m.T, [[0, 0], [288, 384], [144, 192]], atol=1e-4)
    # to_frame is the inverse mapping.
    points = np.array([[0, 0], [288, 384], [144, 192], [10.5, 300.25]], dtype=np.float32)
    back = to_frame(points, centre, scale, SIZE)
    np.testing.assert_allclose(back[:3], [[36.25, 25], [223.75, 275], [130, 150]], atol=1e-4)
    np.testing.assert_allclose(np.c_[back, np.ones(4)] @ m.T, points, atol=1e-3)


def test_pose_input_cuts_out_the_box_and_normalises():
    bgr = np.zeros((300, 400, 3), dtype=np.uint8)
    bgr[140:161, 120:141] = (255, 128, 0)  # a square around the box centre (130, 150)
    centre, scale = crop_transform(np.array([100, 50, 160, 250]), SIZE)
    x = pose_input(bgr, centre, scale, SIZE)
    assert x.shape == (3, 384, 288) and x.dtype == np.float32
    # The centre maps to (144, 192), and the frame's channels are normalised in their own order.
    np.testing.assert_allclose(x[:, 192, 144], (np.array([255, 128, 0]) - POSE_MEAN) / POSE_STD, rtol=1e-6)
    np.testing.assert_allclose(x[:, 5, 5], -POSE_MEAN / POSE_STD, rtol=1e-6)  # black outside the square
    # The 21 px square spans 21 * 288 / 187.5 = 32 input pixels.
    row = x[0, 192] > 0
    assert 31 <= row.sum() <= 34


def test_simcc_decode():
    sx = np.full((1, 3, 576), -0.1, dtype=np.float32)
    sy = np.full((1, 3, 768), -0.1, dtype=np.float32)
    sx[0, 0, 101], sy[0, 0, 301] = 0.9, 0.7
    sx[0, 1, 0], sy[0, 1, 767] = 0.5, 0.6
    kp, scores = decode_simcc(sx, sy)
    np.testing.assert_allclose(kp[0, 0], [50.5, 150.5])
    np.testing.assert_allclose(kp[0, 1], [0, 383.5])
    np.testing.assert_allclose(scores[0, :2], [0.7, 0.5])  # the smaller of the two maxima
    assert scores[0, 2] == pytest.approx(-0.1)
    np.testing.assert_allclose(kp[0, 2], [-0.5, -0.5])  # not positive: mmpose's -1, halved


def test_wholebody_to_openpose_body_face_and_hands():
    keypoints = np.stack([np.arange(133) * 2.0, np.arange(133) * 3.0], axis=1).astype(np.float32)
    scores = np.linspace(0.0, 1.0, 133).astype(np.float32)
    scores[5], scores[6] = 0.8, 0.4  # shoulders
    pose = wholebody_to_pose(keypoints, scores, height=1000, width=500)
    assert isinstance(pose, Pose) and pose.body.dtype == np.float32

    def point(i: int) -> list[float]:
        return [i * 2.0 / 500, i * 3.0 / 1000, float(scores[i])]

    # OpenPose order from COCO's: nose, neck, r-shoulder (6), r-elbow (8), r-wrist (10), l-shoulder (5),
    # l-elbow (7), l-wrist (9), r-hip (12), r-knee (14), r-ankle (16), l-hip (11), l-knee (13), l-ankle (15),
    # r-eye (2), l-eye (1), r-ear (4), l-ear (3).
    coco = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for part, index in enumerate(coco):
        if index is not None:
            np.testing.assert_allclose(pose.body[part], point(index), rtol=1e-6, err_msg=f"part {part}")
    np.testing.assert_allclose(pose.body[1], [5.5 * 2 / 500, 5.5 * 3 / 1000, 0.4], rtol=1e-6)  # neck
    assert pose.face.shape == (68, 3) and pose.hands.shape == (2, 21, 3)
    np.testing.assert_allclose(pose.face[0], point(23), rtol=1e-6)
    np.testing.assert_allclose(pose.face[-1], point(90), rtol=1e-6)
    np.testing.assert_allclose(pose.hands[0, 0], point(91), rtol=1e-6)
    np.testing.assert_allclose(pose.hands[1, -1], point(132), rtol=1e-6)
    with pytest.raises(ValueError, match="133"):
        wholebody_to_pose(keypoints[:17], scores[:17], 10, 10)


# --- sessions and batching ------------------------------------------------------------------------------


class _FakeSession:
    """Echoes each input's first value, and records the batch sizes it was run with."""

    def __init__(self, batch) -> None:
        self.batch = batch
        self.calls: list[int] = []

    def get_inputs(self):
        return [SimpleNamespace(name="x", shape=[self.batch, 2])]

    def run(self, _names, feed):
        x = feed["x"]
        if isinstance(self.batch, int):
            assert len(x) == self.batch
        self.calls.append(len(x))
        return [x[:, 0] * 10, x[:, 1]]


def test_run_batched_dynamic_fixed_and_padded():
    inputs = np.arange(14, dtype=np.float32).reshape(7, 2)
    for batch, calls in (("batch", [3, 3, 1]), (None, [3, 3, 1]), (1, [1] * 7), (4, [4, 4])):
        session = _FakeSession(batch)
        first, second = run_batched(session, inputs, max_batch=3)
        np.testing.assert_array_equal(first, inputs[:, 0] * 10)
        np.testing.assert_array_equal(second, inputs[:, 1])
        assert session.calls == calls, batch


def test_providers_follow_the_device():
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session_providers("cuda:1", both) == [("CUDAExecutionProvider", {"device_id": 1}),
                                                  "CPUExecutionProvider"]
    assert session_providers("cuda", both)[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert session_providers("cpu", both) == ["CPUExecutionProvider"]
    assert session_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


# --- the tiny ONNX files end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dwpose(tiny_dir):
    return build_tiny_dwpose(tiny_dir / "dwpose")


@pytest.fixture(scope="module")
def detector(tiny_dwpose) -> DWPoseDetector:
    return load_dwpose(tiny_dwpose, device="cpu", threads=1)


def test_tiny_files_have_the_real_names_and_shapes(detector):
    det_in, pose_in = detector.detector.get_inputs()[0], detector.pose.get_inputs()[0]
    assert (det_in.name, det_in.shape, det_in.type) == ("images", [1, 3, 640, 640], "tensor(float)")
    assert [(o.name, o.shape) for o in detector.detector.get_outputs()] == [("output", [1, 8400, 85])]
    assert (pose_in.name, pose_in.shape[1:], pose_in.type) == ("input", [3, 384, 288], "tensor(float)")
    assert [(o.name, o.shape[1:]) for o in detector.pose.get_outputs()] == [
        ("simcc_x", [133, 576]), ("simcc_y", [133, 768])]
    assert detector.detector_size == (640, 640) and detector.pose_size == (384, 288)


def test_annotate_a_photo(detector):
    photo = skimage.data.astronaut()[:, 16:496]  # 512x480, a real person
    frames = np.stack([photo, photo[:, ::-1]])
    poses = detector.detect_video(frames)
    assert [len(p) for p in poses] == [1, 1]  # the tiny detector finds one "person" per frame
    for pose in (poses[0][0], poses[1][0]):
        assert pose.body.shape == (18, 3) and pose.face.shape == (68, 3) and pose.hands.shape == (2, 21, 3)
        assert (pose.body[:, 2] > 0.3).sum() >= 5 and (pose.face[:, 2] >= 0.3).sum() >= 10
    video = detector.annotate(frames)
    assert video.shape == frames.shape and video.dtype == np.uint8
    assert 0 < video.any(axis=3).mean() < 0.2  # something drawn, on black
    # Face points are there: white pixels exist (limbs are at most 60 % bright, joints never white).
    assert (video == 255).all(axis=3).any()


def test_fixed_and_dynamic_batches_give_the_same_poses(tiny_dir, detector):
    other = load_dwpose(build_tiny_dwpose(tiny_dir / "dwpose-swapped", detector_batch="n", pose_batch=1),
                        device="cpu", threads=1)
    assert other.detector.get_inputs()[0].shape[0] == "n" and other.pose.get_inputs()[0].shape[0] == 1
    frames = np.stack([skimage.data.astronaut()[::2, ::2], skimage.data.chelsea()[:256, :256]])
    a, b = detector.detect_video(frames), other.detect_video(frames)
    assert [len(p) for p in a] == [len(p) for p in b]
    # Frame by frame and crop by crop: the same again.
    c = DWPoseDetector(detector.detector, detector.pose, frame_batch=1, crop_batch=1).detect_video(frames)
    assert [len(p) for p in a] == [len(p) for p in c]
    for pa, pb, pc in zip(sum(a, []), sum(b, []), sum(c, []), strict=True):
        np.testing.assert_allclose(pa.body, pb.body, atol=1e-5)
        np.testing.assert_allclose(pa.face, pb.face, atol=1e-5)
        np.testing.assert_allclose(pa.body, pc.body, atol=1e-5)


def test_frames_without_people_are_posed_whole(detector):
    class Nobody:
        def __init__(self, real) -> None:
            self.real = real

        def get_inputs(self):
            return self.real.get_inputs()

        def run(self, names, feed):
            (out,) = self.real.run(names, feed)
            return [np.zeros_like(out)]

    empty = DWPoseDetector(Nobody(detector.detector), detector.pose)
    frames = np.stack([skimage.data.astronaut()[::4, ::4]] * 3)
    assert all(len(b) == 0 for b in empty.detect_people(np.ascontiguousarray(frames[..., ::-1])))
    poses = empty.detect_video(frames)
    assert [len(p) for p in poses] == [1, 1, 1]


def test_detection_runs_on_the_frame_at_a_1024_short_side(detector):
    # A small frame (as a 240p output would be): VACE enlarges it to a 1024 short side (64-pixel multiples,
    # Lanczos) before detecting, so the pose network's crops come from that frame.
    frame = cv2.resize(skimage.data.astronaut()[:, 16:496], (256, 240), interpolation=cv2.INTER_AREA)
    assert vace_canvas_size(240, 256) == (1024, 1088)
    enlarged = cv2.resize(frame, (1088, 1024), interpolation=cv2.INTER_LANCZOS4)
    at_frame_size = DWPoseDetector(detector.detector, detector.pose, detect_short_side=None)
    poses = detector.detect_video(frame[None])[0]
    on_enlarged = at_frame_size.detect_video(enlarged[None])[0]
    on_small = at_frame_size.detect_video(frame[None])[0]
    assert len(poses) == len(on_enlarged) >= 1
    for ours, vace in zip(poses, on_enlarged, strict=True):  # fractions of the frame: comparable at any size
        np.testing.assert_allclose(ours.body, vace.body, atol=1e-6)
        np.testing.assert_allclose(ours.face, vace.face, atol=1e-6)
    assert not np.allclose(poses[0].body, on_small[0].body, atol=1e-3)  # detecting at 256x240 differs


def test_missing_files(tmp_path, tiny_dwpose):
    with pytest.raises(AnnotatorNotFoundError, match="vace download --annotators"):
        load_dwpose(tmp_path / "nothing")
    (tmp_path / DETECTOR_FILE).write_bytes((tiny_dwpose / DETECTOR_FILE).read_bytes())
    with pytest.raises(AnnotatorNotFoundError, match=POSE_FILE):
        load_dwpose(tmp_path)
