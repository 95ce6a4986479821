"""Tiny randomly initialised annotator models, saved in each real model's on-disk layout.

For tests and for `vace serve --model tiny`: the outputs are meaningless, but every model loads through the
same code as the real one. Each builder seeds torch itself (without touching the caller's RNG state) and
writes into `dest`, which it creates; it returns `dest`. The DWPose builder writes its two ONNX graphs with
the `onnx` package's helper API from a seeded numpy generator (no torch export involved).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

_SEED = 0
# The real Depth-Anything-V2 processor normalises with ImageNet statistics.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def build_tiny_depth_anything(dest: Path, size: int = 56) -> Path:
    """Depth-Anything-V2 layout (config.json, model.safetensors, preprocessor_config.json).

    `size` is the processor's short-side target (the real model uses 518); small keeps tiny jobs fast.
    """
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    dest = Path(dest)
    backbone = Dinov2Config(
        image_size=518,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        patch_size=14,
        neck_hidden_sizes=[16, 32, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=16,
        depth_estimation_type="relative",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = DepthAnythingForDepthEstimation(config).eval()
    model.save_pretrained(dest)
    # Same processor settings as the real repo, apart from the size.
    DPTImageProcessor(
        size={"height": size, "width": size},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        image_mean=_IMAGENET_MEAN,
        image_std=_IMAGENET_STD,
    ).save_pretrained(dest)
    return dest


def build_tiny_midas(dest: Path, size: int = 64) -> Path:
    """Intel/dpt-hybrid-midas layout: DPT with a BiT (ResNet) stem, a square input of `size` (real: 384)."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    dest = Path(dest)
    backbone = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[1, 1, 1],
        hidden_sizes=[8, 16, 32],
        embedding_size=8,
        num_groups=2,
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    config = DPTConfig(
        is_hybrid=True,
        backbone_config=backbone,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=size,
        patch_size=16,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_in_index=-1,
        readout_type="project",
        backbone_featmap_shape=[1, 32, size // 16, size // 16],
        neck_ignore_stages=[0, 1],
        reassemble_factors=[4, 2, 1, 0.5],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = DPTForDepthEstimation(config).eval()
    model.save_pretrained(dest)
    # The hybrid embeddings require exactly image_size x image_size, hence no aspect-ratio keeping (as real).
    DPTImageProcessor(
        size={"height": size, "width": size}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(dest)
    return dest


def build_tiny_openpose_body(dest: Path) -> Path:
    """`body_pose_model.pth` with random weights for controlnet-aux's network (full size: about 210 MB).

    The network has no size knobs, so the file is as large as the real one. Keys are stored without the
    stage prefix (`conv1_1.weight`, not `model0.conv1_1.weight`), like the real checkpoint; controlnet-aux's
    `transfer` maps them back.
    """
    from controlnet_aux.open_pose.model import bodypose_model

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        net = bodypose_model()
    state = {name.split(".", 1)[1]: tensor for name, tensor in net.state_dict().items()}
    torch.save(state, dest / "body_pose_model.pth")
    return dest


def _onnx_model(nodes, inputs, outputs, initializers, name: str):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    # Opset 17 and IR 8: loadable by onnxruntime releases back to 1.13 (CPU and GPU builds alike).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="vace-server tiny")


def _tiny_yolox(batch: int | str, size: int = 640, num_classes: int = 80):
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
                  rank: int = 8, split_ratio: int = 2):
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


class _TinyFilm(torch.nn.Module):
    """FILM's TorchScript call signature: a cross-fade plus a small random convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Conv2d(7, 3, kernel_size=3, padding=1)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        t = dt.view(-1, 1, 1, 1)
        blend = img0 * (1 - t) + img1 * t
        x = torch.cat([img0, img1, t.expand(-1, 1, img0.shape[2], img0.shape[3])], dim=1)
        return (blend + 0.05 * torch.tanh(self.mix(x))).clamp(0, 1)


def build_tiny_film(dest: Path) -> Path:
    """`film_net_fp32.pt`: a scripted module with FILM's `model(img0, img1, dt)` signature."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        module = _TinyFilm().eval()
    torch.jit.save(torch.jit.script(module), str(dest / "film_net_fp32.pt"))
    return dest


def build_tiny_nsfw_classifier(dest: Path, size: int = 32) -> Path:
    """Falconsai/nsfw_image_detection layout: a ViT classifier labelled normal/nsfw (real input: 224)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    dest = Path(dest)
    config = ViTConfig(
        image_size=size,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = ViTForImageClassification(config).eval()
        # A random head scores near 0.5 and would flag tiny jobs at random: bias it firmly to `normal`
        # (nsfw probability about 3e-4), so the default threshold passes and a threshold of 0 flags.
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor([4.0, -4.0]))
    model.save_pretrained(dest)
    ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=2
    ).save_pretrained(dest)
    return dest


# Qwen2.5's ChatML format, written from its published shape.
_CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_prompt_llm(dest: Path) -> Path:
    """Qwen2.5-Instruct layout: a 2-layer random Qwen2, a byte-level BPE tokenizer, a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from preprocessors.annotators.prompt_expansion import DEFAULT_TASK, SYSTEM_PROMPT, TASK_DESCRIPTIONS

    dest = Path(dest)
    # A byte-level BPE like Qwen's, trained in code on a few sentences: any text encodes and decodes back.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = [SYSTEM_PROMPT, DEFAULT_TASK, *TASK_DESCRIPTIONS.values(), "a cat walks slowly at sunset"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(corpus, trainer)
    vocab = backend.get_vocab()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = _CHATML_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        # Untied (as in Qwen2.5-7B): a random *tied* model just repeats the prompt's last token ("\n"),
        # which the expander strips to nothing, so the tiny server would never show an expansion.
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<|endoftext|>"], do_sample=False
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_rife(dest: Path) -> Path:
    """Practical-RIFE v4.25/v4.26 `train_log/flownet.pkl` layout (keys prefixed `module.`, 4 feature channels,
    plus stand-ins for the training-only `teacher`/`caltime` tensors the real file carries), narrow blocks."""
    from preprocessors.interpolation.rife import IFNet

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        net = IFNet(widths=(16, 16, 8, 8, 8))
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.teacher.lastconv.0.bias"] = torch.zeros(52)
    state["module.caltime.0.bias"] = torch.zeros(8)
    torch.save(state, dest / "flownet.pkl")
    return dest


def _builders(include_openpose: bool = True) -> dict:
    from preprocessors.annotators import layout

    builders = {
        layout.DEPTH_ANYTHING: build_tiny_depth_anything,
        layout.MIDAS: build_tiny_midas,
        layout.FILM: build_tiny_film,
        layout.RIFE: build_tiny_rife,
        layout.NSFW: build_tiny_nsfw_classifier,
        layout.PROMPT_LLM: build_tiny_prompt_llm,
        layout.DWPOSE: build_tiny_dwpose,
    }
    if include_openpose:
        builders[layout.OPENPOSE] = build_tiny_openpose_body
    return builders


def ensure_tiny_annotator(root: Path, name: str) -> Path:
    """`root / name`, building that one tiny model first if it is missing; returns the folder.

    The model is written to a temporary sibling and renamed into place, so a folder is either complete or
    absent, and concurrent builders (several workers) are harmless: the first rename wins.
    """
    builders = _builders()
    if name not in builders:
        raise KeyError(f"no tiny builder for {name!r}; known: {sorted(builders)}")
    root = Path(root)
    folder = root / name
    if folder.exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        builders[name](tmp / "model")
        os.rename(tmp / "model", folder)  # fails, harmlessly, if another process got there first
    except FileExistsError:
        pass
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tiny_annotators(root: Path, include_openpose: bool = True) -> Path:
    """Every tiny annotator under `root`, one sub-folder each (names from `layout`); returns `root`.

    Folders that already exist are left alone, so a second call only fills in what is missing.
    `include_openpose=False` skips the 210 MB OpenPose file (about 5 s to write).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in _builders(include_openpose):
        ensure_tiny_annotator(root, name)
    return root
