"""DWPose, VACE's pose annotator: body + face (+ hand) keypoints from two ONNX models on onnxruntime.

Detection only: it returns `Pose` objects, and `pose_render` draws them. The files are VACE's
(`ali-vilab/VACE-Annotators` `pose/`, the same as `yzd-v/DWPose`):

- `yolox_l.onnx`, the YOLOX-L person detector. Input (1, 3, 640, 640): the BGR frame scaled to fit,
  pasted at the top left of a canvas filled with 114, float 0..255, not normalised. Output (1, 8400, 85):
  raw predictions of the 80x80, 40x40 and 20x20 grids (strides 8, 16, 32), per cell x/y offsets in cells,
  log width/height in strides, sigmoid objectness and 80 sigmoid class scores. A person is class 0, scored
  objectness x class; boxes above 0.3 go through NMS at IoU 0.45 (DWPose's settings).
- `dw-ll_ucoco_384.onnx`, RTMPose-l trained on COCO-WholeBody (133 keypoints) and distilled by DWPose.
  Input (N, 3, 384, 288): each person box enlarged 1.25 times, widened or heightened to 288:384 and cut
  out by an affine warp (bilinear), normalised with mean (123.675, 116.28, 103.53) and std (58.395, 57.12,
  57.375). Outputs SimCC x (N, 133, 576) and y (N, 133, 768), two bins per pixel: a keypoint is the argmax
  of each axis halved, mapped back through the warp; its score the smaller of the two maxima.

Channel order, as VACE runs it: VACE gives DWPose BGR frames, and DWPose's code normalises the BGR crop with
the mean/std listed in RGB order (mmpose trained RTMPose on RGB); this module does the same, so it
reproduces VACE's keypoints rather than mmpose's. A frame without any person box is posed as one box
covering the whole frame, as in DWPose.

COCO-WholeBody order: 0-16 body (COCO-17), 17-22 feet, 23-90 face (68 points), 91-111 left hand, 112-132
right hand. `wholebody_to_pose` turns that into OpenPose's 18 body points (the neck is the middle of the
shoulders), the 68 face points and both hands; feet are dropped (VACE does not draw them).

Both sessions run on CUDA when the device is a GPU and onnxruntime has the CUDA provider (onnxruntime-gpu),
else on the CPU. The pose network takes all person crops of several frames per call when its batch
dimension is dynamic; a file exported with a fixed batch (of 1) is run crop by crop. The same holds for
the detector and frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
    vace_canvas_size,
)

log = logging.getLogger(__name__)

DETECTOR_FILE = "yolox_l.onnx"
POSE_FILE = "dw-ll_ucoco_384.onnx"

YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
PERSON_SCORE_THRESHOLD = 0.3
NMS_IOU_THRESHOLD = 0.45
BOX_PADDING = 1.25
POSE_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
POSE_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
SIMCC_SPLIT_RATIO = 2.0
NUM_WHOLEBODY_KEYPOINTS = 133

# COCO-17 index of each OpenPose-18 body point (-1: the neck, the middle of both shoulders).
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER = 5, 6
FACE_SLICE = slice(23, 91)
LEFT_HAND_SLICE = slice(91, 112)
RIGHT_HAND_SLICE = slice(112, 133)


# --- detector ------------------------------------------------------------------------------------------


def letterbox(bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """BGR uint8 (H, W, 3) -> float32 (3, h, w) YOLOX input and the scale applied to the frame."""
    h, w = size
    ratio = min(h / bgr.shape[0], w / bgr.shape[1])
    new_w, new_h = int(bgr.shape[1] * ratio), int(bgr.shape[0] * ratio)
    canvas = np.full((h, w, 3), YOLOX_PAD_VALUE, dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1).astype(np.float32), ratio


def yolox_grid(size: tuple[int, int],
               strides: Sequence[int] = YOLOX_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) of every prediction (N, 2) and its stride (N, 1), in YOLOX's output order."""
    cells, cell_strides = [], []
    for stride in strides:
        gh, gw = size[0] // stride, size[1] // stride
        ys, xs = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full((gh * gw, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def decode_yolox(pred: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One image's raw (N, 85) output -> person boxes (N, 4) xyxy in input pixels and scores (N,)."""
    cells, strides = yolox_grid(size)
    if len(pred) != len(cells):
        raise ValueError(f"the detector gave {len(pred)} predictions; a {size[1]}x{size[0]} YOLOX input "
                         f"has {len(cells)} (strides {YOLOX_STRIDES})")
    centre = (pred[:, :2] + cells) * strides
    half = np.exp(pred[:, 2:4]) * strides / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return boxes, pred[:, 4] * pred[:, 5]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU_THRESHOLD) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    Areas and overlaps count pixels inclusively (+1), as YOLOX's and DWPose's numpy NMS do.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        iw = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        ih = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = iw * ih
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def person_boxes(pred: np.ndarray, size: tuple[int, int], ratio: float,
                 score_threshold: float = PERSON_SCORE_THRESHOLD) -> np.ndarray:
    """Raw (N, 85) output of one letterboxed frame -> (P, 4) person boxes in frame pixels, best first."""
    boxes, scores = decode_yolox(pred.astype(np.float32), size)
    # DWPose filters at 0.1, runs NMS, then keeps scores above 0.3: a box under 0.3 can only suppress boxes
    # scored below itself, so filtering at 0.3 first keeps exactly the same boxes.
    candidates = scores > score_threshold
    boxes, scores = boxes[candidates], scores[candidates]
    return boxes[nms(boxes, scores)] / ratio


# --- pose network ---------------------------------------------------------------------------------------


def crop_transform(box: np.ndarray, input_size: tuple[int, int],
                   padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Person box xyxy -> (centre, scale): the frame region, (w, h) in pixels, mapped onto the input."""
    h, w = input_size
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32)
    bw, bh = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = w / h
    scale = np.array([bw, bw / aspect] if bw > bh * aspect else [bh * aspect, bh], dtype=np.float32)
    return centre, scale


def crop_matrix(centre: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The 2x3 affine matrix taking frame pixels to input pixels (no rotation)."""
    h, w = input_size
    s = w / max(float(scale[0]), 1e-6)
    return np.array([[s, 0.0, w / 2 - s * centre[0]], [0.0, s, h / 2 - s * centre[1]]], dtype=np.float64)


def pose_input(bgr: np.ndarray, centre: np.ndarray, scale: np.ndarray,
               input_size: tuple[int, int]) -> np.ndarray:
    """One person crop as the pose network's float32 (3, h, w) input."""
    h, w = input_size
    crop = cv2.warpAffine(bgr, crop_matrix(centre, scale, input_size), (w, h), flags=cv2.INTER_LINEAR)
    return ((crop.astype(np.float32) - POSE_MEAN) / POSE_STD).transpose(2, 0, 1)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray,
                 split_ratio: float = SIMCC_SPLIT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, Wx) and (N, K, Wy) -> keypoints (N, K, 2) in input pixels and scores (N, K).

    Score = min(max x, max y). A keypoint whose score is not positive is put at -1 / split_ratio, as
    mmpose does (it is never drawn: its score is below any threshold).
    """
    x = np.argmax(simcc_x, axis=2).astype(np.float32)
    y = np.argmax(simcc_y, axis=2).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=2), simcc_y.max(axis=2)).astype(np.float32)
    locs = np.stack([x, y], axis=-1)
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


def to_frame(keypoints: np.ndarray, centre: np.ndarray, scale: np.ndarray,
             input_size: tuple[int, int]) -> np.ndarray:
    """Keypoints (K, 2) in input pixels -> frame pixels (the inverse of `crop_matrix`)."""
    h, w = input_size
    return keypoints / np.array([w, h], dtype=np.float32) * scale + centre - scale / 2


def wholebody_to_pose(keypoints: np.ndarray, scores: np.ndarray, height: int, width: int) -> Pose:
    """133 COCO-WholeBody keypoints (133, 2) in frame pixels and scores (133,) -> a Pose in fractions.

    The neck is the middle of both shoulders, scored by the weaker one: it is drawn exactly when both
    shoulders pass the threshold, as in DWPose (which scores it 1 or 0 by that test).
    """
    if keypoints.shape != (NUM_WHOLEBODY_KEYPOINTS, 2) or scores.shape != (NUM_WHOLEBODY_KEYPOINTS,):
        n = NUM_WHOLEBODY_KEYPOINTS
        raise ValueError(f"expected ({n}, 2) keypoints and ({n},) scores, "
                         f"got {keypoints.shape} and {scores.shape}")
    xy = keypoints / np.array([width, height], dtype=np.float32)
    points = np.concatenate([xy, scores[:, None]], axis=1).astype(np.float32)
    body = np.zeros((NUM_BODY_KEYPOINTS, 3), dtype=np.float32)
    for part, coco in enumerate(OPENPOSE_FROM_COCO):
        if coco >= 0:
            body[part] = points[coco]
    shoulders = points[[COCO_LEFT_SHOULDER, COCO_RIGHT_SHOULDER]]
    body[1] = (*shoulders[:, :2].mean(axis=0), shoulders[:, 2].min())
    hands = np.stack([points[LEFT_HAND_SLICE], points[RIGHT_HAND_SLICE]])
    return Pose(body=body, face=points[FACE_SLICE].copy(), hands=hands)


# --- sessions -------------------------------------------------------------------------------------------


def session_providers(device=None, available: Sequence[str] | None = None) -> list:
    """onnxruntime providers for `device` (None: the first GPU when there is one): CUDA when it is a GPU and
    onnxruntime offers CUDAExecutionProvider, then always the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers() if available is None else available
    dev = resolve_device(device)
    providers: list = []
    if dev.type == "cuda":
        if "CUDAExecutionProvider" in available:
            providers.append(("CUDAExecutionProvider", {"device_id": dev.index or 0}))
        else:
            log.warning("DWPose runs on the CPU: onnxruntime has no CUDAExecutionProvider "
                        "(install onnxruntime-gpu to run it on %s)", dev)
    providers.append("CPUExecutionProvider")
    return providers


def fixed_batch(session) -> int | None:
    """The input's batch size when the file fixes it, None when it is dynamic."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def input_hw(session, default: tuple[int, int]) -> tuple[int, int]:
    """The input's (height, width) from the file, `default` where a dimension is dynamic."""
    shape = session.get_inputs()[0].shape
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape[2:4]]
    return (dims[0] or default[0], dims[1] or default[1])


def run_batched(session, inputs: np.ndarray, max_batch: int) -> list[np.ndarray]:
    """Run `session` over (N, ...) inputs in chunks: `max_batch` at a time when the batch is dynamic, the
    file's batch size when it is fixed (the last chunk zero-padded to it). Returns each output, (N, ...)."""
    fixed = fixed_batch(session)
    step = fixed or max(1, max_batch)
    name = session.get_inputs()[0].name
    chunks: list[list[np.ndarray]] = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start : start + step]
        n = len(chunk)
        if fixed and n < fixed:
            chunk = np.concatenate([chunk, np.zeros((fixed - n, *chunk.shape[1:]), chunk.dtype)])
        chunks.append([out[:n] for out in session.run(None, {name: np.ascontiguousarray(chunk)})])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def detection_frames(bgr: np.ndarray, short_side: int | None) -> np.ndarray:
    """The frames as VACE's pose annotator detects on them: short side scaled to `short_side`, both sides
    rounded to multiples of 64 (vace_canvas_size), Lanczos to enlarge and area averaging to shrink
    (VACE's `resize_image`). None: unchanged."""
    if short_side is None:
        return bgr
    height, width = bgr.shape[1:3]
    size_h, size_w = vace_canvas_size(height, width, short_side)
    if (size_h, size_w) == (height, width):
        return bgr
    enlarge = short_side > min(height, width)
    interpolation = cv2.INTER_LANCZOS4 if enlarge else cv2.INTER_AREA
    return np.stack([cv2.resize(frame, (size_w, size_h), interpolation=interpolation) for frame in bgr])


class DWPoseDetector:
    def __init__(self, detector, pose, frame_batch: int = 8, crop_batch: int = 16,
                 detect_short_side: int | None = VACE_CANVAS_SHORT_SIDE) -> None:
        self.detector = detector  # onnxruntime.InferenceSession of yolox_l.onnx
        self.pose = pose  # onnxruntime.InferenceSession of dw-ll_ucoco_384.onnx
        self.frame_batch = frame_batch
        self.crop_batch = crop_batch
        # VACE detects on the frame resized to a 1024 short side, whatever the output size: the pose network's
        # crops of a small frame are otherwise cut from fewer, blurrier pixels. None detects at frame size.
        self.detect_short_side = detect_short_side
        self.detector_size = input_hw(detector, (640, 640))
        self.pose_size = input_hw(pose, (384, 288))
        names = [o.name for o in pose.get_outputs()]
        # The outputs by name when the file calls them simcc_x / simcc_y (DWPose's does), else in file order.
        named = {"simcc_x", "simcc_y"} <= set(names)
        self._simcc_order = (names.index("simcc_x"), names.index("simcc_y")) if named else (0, 1)

    def detect_people(self, bgr_frames: np.ndarray) -> list[np.ndarray]:
        """BGR uint8 (F, H, W, 3) -> per frame, person boxes (P, 4) xyxy in frame pixels."""
        batch = [letterbox(frame, self.detector_size) for frame in bgr_frames]
        pred = run_batched(self.detector, np.stack([b[0] for b in batch]), self.frame_batch)[0]
        return [person_boxes(p, self.detector_size, ratio) for p, (_, ratio) in zip(pred, batch, strict=True)]

    def detect_video(self, frames: np.ndarray) -> list[list[Pose]]:
        """uint8 RGB (F, H, W, 3) -> the people found in each frame.

        `frame_batch` frames at a time (the letterboxed inputs take 4.9 MB a frame): the detector gets them
        in one call when its batch is dynamic, and the pose network all their person crops, `crop_batch`
        per call.
        """
        check_frames(frames)
        poses: list[list[Pose]] = []
        for start in range(0, len(frames), self.frame_batch):
            poses += self._detect_chunk(frames[start : start + self.frame_batch])
        return poses

    def _detect_chunk(self, frames: np.ndarray) -> list[list[Pose]]:
        # Both networks were run on BGR frames by DWPose/VACE. Poses come out in fractions of the frame, so
        # detecting on the resized frame draws at any size.
        bgr = detection_frames(np.ascontiguousarray(frames[..., ::-1]), self.detect_short_side)
        height, width = bgr.shape[1:3]
        boxes = self.detect_people(bgr)
        crops, transforms, owners = [], [], []
        for index, frame_boxes in enumerate(boxes):
            if len(frame_boxes) == 0:  # DWPose poses the whole frame when it finds nobody
                frame_boxes = np.array([[0, 0, width, height]], dtype=np.float32)
            for box in frame_boxes:
                centre, scale = crop_transform(box, self.pose_size)
                crops.append(pose_input(bgr[index], centre, scale, self.pose_size))
                transforms.append((centre, scale))
                owners.append(index)
        outputs = run_batched(self.pose, np.stack(crops), self.crop_batch)
        keypoints, scores = decode_simcc(outputs[self._simcc_order[0]], outputs[self._simcc_order[1]])
        poses: list[list[Pose]] = [[] for _ in range(len(frames))]
        for kp, sc, (centre, scale), owner in zip(keypoints, scores, transforms, owners, strict=True):
            in_frame = to_frame(kp, centre, scale, self.pose_size)
            poses[owner].append(wholebody_to_pose(in_frame, sc, height, width))
        return poses

    def detect(self, frame: np.ndarray) -> list[Pose]:
        """One uint8 RGB (H, W, 3) frame -> the people found in it."""
        return self.detect_video(frame[None])[0]

    def annotate(self, frames: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                 draw_hands: bool = False) -> np.ndarray:
        """uint8 (F, H, W, 3) video -> uint8 (F, H, W, 3) pose video (body + face, VACE's drawing)."""
        poses = self.detect_video(frames)
        return render_pose_video(poses, frames.shape[1], frames.shape[2], threshold, draw_face=True,
                                 draw_hands=draw_hands, canvas_short_side=VACE_CANVAS_SHORT_SIDE)


def load_dwpose(folder: Path, device=None, threads: int | None = None) -> DWPoseDetector:
    """Load `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` from `folder` (VACE-Annotators' `pose/`, yzd-v/DWPose).

    `threads`: onnxruntime's intra-op threads on the CPU (default: torch's thread count, so one setting
    covers every annotator).
    """
    folder = require_folder(folder, "DWPose", (DETECTOR_FILE, POSE_FILE))
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # warnings about unused initialisers and the like are noise here
    providers = session_providers(device)

    def session(name: str):
        return ort.InferenceSession(str(folder / name), sess_options=options, providers=providers)

    return DWPoseDetector(session(DETECTOR_FILE), session(POSE_FILE))
