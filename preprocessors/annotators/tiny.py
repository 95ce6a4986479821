"""Tiny randomly initialised annotator models, saved in each real model's on-disk layout.

For tests and for `vace serve --model tiny`: the outputs are meaningless, but every model loads through the
same code as the real one. Each builder seeds torch itself (without touching the caller's RNG state) and
writes into `dest`, which it creates; it returns `dest`. DWPose's builder is in tiny_dwpose.py; catalog.py
says which builder makes which model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from preprocessors.annotators import catalog

_SEED = 0
# The real Depth-Anything-V2 processor normalises with ImageNet statistics.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


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
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
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
CHATML_TEMPLATE = (
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
    tokenizer.chat_template = CHATML_TEMPLATE
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


def ensure_tiny_annotator(root: Path, name: str) -> Path:
    """`root / name`, building that one tiny model first if it is missing; returns the folder.

    The model is written to a temporary sibling and renamed into place, so a folder is either complete or
    absent, and concurrent builders (several workers) are harmless: the first rename wins.
    """
    model = catalog.by_folder(name)
    root = Path(root)
    folder = root / name
    if folder.exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        model.build_tiny(tmp / "model")
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
    """Every tiny annotator under `root`, one sub-folder each (names from catalog.py); returns `root`.

    Folders that already exist are left alone, so a second call only fills in what is missing.
    `include_openpose=False` skips the 210 MB OpenPose file (about 5 s to write).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for model in catalog.ALL:
        if include_openpose or model is not catalog.OPENPOSE:
            ensure_tiny_annotator(root, model.folder)
    return root
