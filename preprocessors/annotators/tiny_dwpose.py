"""DWPose's tiny stand-in: `yolox_l.onnx` and `dw-ll_ucoco_384.onnx` with the real input/output contracts.

For tests and for `vace serve --model tiny`. The two ONNX graphs are written with the `onnx` package's helper
API from a seeded numpy generator (no torch export involved), in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto, TensorProto, ValueInfoProto

_SEED = 0


def _onnx_model(nodes: list[NodeProto], inputs: list[ValueInfoProto], outputs: list[ValueInfoProto],
                initializers: list[TensorProto], name: str) -> ModelProto:
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    # Opset 17 and IR 8: loadable by onnxruntime releases back to 1.13 (CPU and GPU builds alike).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="vace-server tiny")


def _tiny_yolox(batch: int | str, size: int = 640, num_classes: int = 80) -> ModelProto:
    """YOLOX's output contract on a few pooling layers: (B, N, 5 + classes) with raw box terms and sigmoid
    objectness/class scores, over the stride-8/16/32 grids. Every 1x1 convolution sees the pooled BGR pixels
    (0..255) with small random weights; a fixed bias map on the stride-32 grid makes one cell, above the
    middle of the input, score a person firmly (about 0.9) with a box of roughly 190x320 input pixels, and
    keeps every other cell near 0. So a tiny job always finds one person, and the pose path draws."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_SEED)
    channels = 5 + num_classes
    nodes, inits, levels = [], [], []
    previous = "images"
    for level, stride in enumerate((8, 16, 32)):
        kernel = 8 if level == 0 else 2
        nodes.append(helper.make_node("AveragePool", [previous], [f"pool{level}"],
                                      kernel_shape=[kernel, kernel], strides=[kernel, kernel]))
        previous = f"pool{level}"
        weight = (rng.standard_normal((channels, 3, 1, 1)) * 1e-3).astype(np.float32)
        bias = np.zeros(channels, dtype=np.float32)
        bias[4:] = -8.0  # objectness and class logits: nobody, unless the bias map below says so
        inits += [numpy_helper.from_array(weight, f"w{level}"), numpy_helper.from_array(bias, f"b{level}")]
        nodes.append(helper.make_node("Conv", [previous, f"w{level}", f"b{level}"], [f"conv{level}"]))
        head = f"conv{level}"
        if stride == 32:
            grid = size // stride
            bump = np.zeros((1, channels, grid, grid), dtype=np.float32)
            row, col = grid * 3 // 10, grid // 2  # one cell, above the middle
            bump[0, 2, row, col], bump[0, 3, row, col] = np.log(6.0), np.log(10.0)  # w, h in strides
            bump[0, 4:6, row, col] = 10.0  # objectness and person logits: -8 + 10 = 2 -> 0.88 each
            inits.append(numpy_helper.from_array(bump, "bump"))
            nodes.append(helper.make_node("Add", [head, "bump"], ["bumped"]))
            head = "bumped"
        inits.append(numpy_helper.from_array(np.array([0, channels, -1], dtype=np.int64), f"flat{level}"))
        nodes.append(helper.make_node("Reshape", [head, f"flat{level}"], [f"level{level}"]))
        levels.append(f"level{level}")
    nodes.append(helper.make_node("Concat", levels, ["all"], axis=2))
    nodes.append(helper.make_node("Transpose", ["all"], ["raw"], perm=[0, 2, 1]))
    inits.append(numpy_helper.from_array(np.array([4, channels - 4], dtype=np.int64), "split"))
    nodes.append(helper.make_node("Split", ["raw", "split"], ["box", "logits"], axis=2))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["probs"]))
    nodes.append(helper.make_node("Concat", ["box", "probs"], ["output"], axis=2))
    n = sum((size // s) ** 2 for s in (8, 16, 32))
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, n, channels])]
    return _onnx_model(nodes, inputs, outputs, inits, "tiny_yolox")


def _tiny_rtmpose(batch: int | str, size: tuple[int, int] = (384, 288), keypoints: int = 133,
                  rank: int = 8, split_ratio: int = 2) -> ModelProto:
    """RTMPose's SimCC contract: input (B, 3, 384, 288), outputs simcc_x (B, 133, 576), simcc_y (B, 133, 768).

    The crop is pooled to 12x9, a random linear layer with a sigmoid gives each keypoint `rank` weights,
    and those mix `rank` fixed Gaussian bumps per axis: every keypoint gets a clear peak somewhere (scores
    mostly 0.3..1.5, like real ones), which moves with the image."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(_SEED + 1)
    h, w = size
    pooled = (h // 32) * (w // 32) * 3
    bins_x, bins_y = w * split_ratio, h * split_ratio

    def bumps(bins: int) -> np.ndarray:
        centres = rng.uniform(0.2, 0.8, rank) * bins
        axis = np.arange(bins)[None, :]
        return np.exp(-0.5 * ((axis - centres[:, None]) / (bins / 40)) ** 2).astype(np.float32)

    weight = (rng.standard_normal((pooled, keypoints * rank)) * 0.3).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.full(keypoints * rank, -1.0, dtype=np.float32), "b"),
        numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([0, keypoints, rank], dtype=np.int64), "mix_shape"),
        numpy_helper.from_array(bumps(bins_x), "bumps_x"),
        numpy_helper.from_array(bumps(bins_y), "bumps_y"),
    ]
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Reshape", ["pooled", "flat"], ["features"]),
        helper.make_node("Gemm", ["features", "w", "b"], ["linear"]),
        helper.make_node("Sigmoid", ["linear"], ["weights"]),
        helper.make_node("Reshape", ["weights", "mix_shape"], ["mix"]),
        helper.make_node("MatMul", ["mix", "bumps_x"], ["simcc_x"]),
        helper.make_node("MatMul", ["mix", "bumps_y"], ["simcc_y"]),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, h, w])]
    outputs = [
        helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [batch, keypoints, bins_x]),
        helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [batch, keypoints, bins_y]),
    ]
    return _onnx_model(nodes, inputs, outputs, inits, "tiny_rtmpose")


def build_tiny_dwpose(dest: Path, detector_batch: int | str = 1, pose_batch: int | str = "batch") -> Path:
    """`yolox_l.onnx` and `dw-ll_ucoco_384.onnx` with the real input/output names, shapes and dtypes.

    A batch given as a string is a dynamic dimension of that name. By default the detector has a fixed
    batch of 1 (as the real file is believed to) and the pose network a dynamic one, so tiny runs cover both
    of the runner's paths. About 1.5 MB, built in milliseconds with the `onnx` package.
    """
    import onnx

    from preprocessors.annotators.dwpose import DETECTOR_FILE, POSE_FILE

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for model, name in ((_tiny_yolox(detector_batch), DETECTOR_FILE), (_tiny_rtmpose(pose_batch), POSE_FILE)):
        onnx.checker.check_model(model)
        onnx.save(model, str(dest / name))
    return dest
