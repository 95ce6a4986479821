"""Full-size annotator models with random weights, in each real model's on-disk format, for timing.

For `python -m benchmarks.annotators --full-size`: every builder here makes the real architecture at
its real size (so loading and running it costs what the real model costs), with random weights (so its
outputs are meaningless), and writes it into `dest` the way the real download lays it out, for the same
loader the server uses. Nothing is downloaded. Each builder seeds torch itself without touching the
caller's RNG state, creates `dest` and returns it.

Where the sizes come from (public facts, written down here, not copied from the model repositories):

- MiDaS v3 DPT-Hybrid (Intel/dpt-hybrid-midas): transformers' DPT in hybrid mode, i.e. ViT-B/16 (hidden 768,
  12 layers, 12 heads, MLP 3072) on a BiT ResNet-50 stem (bottleneck blocks, depths 3-4-9, group norm with 32
  groups, "same" padding, widths 256/512/1024), 384x384 input, readout "project", neck widths
  [256, 512, 768, 768], fusion width 256, reassemble factors [1, 1, 1, 0.5] (transformers'
  `convert_dpt_hybrid_to_pytorch.py`, which made that repository; its image processor is
  `DPTImageProcessor(size=384)`: a square 384x384 resize, mean/std 0.5). The hybrid ViT is the base width,
  not ViT-L: 122.4 M parameters here, against about 123 M shown for the published file (the small gap was
  not resolved offline; a ViT-L hybrid would be 348 M).
- Depth-Anything-V2-Large (depth-anything/Depth-Anything-V2-Large-hf): DINOv2-L/14 (hidden 1024, 24 layers,
  16 heads, MLP ratio 4, 518 position grid) feeding a DPT head from layers 5, 12, 18, 24 (Depth-Anything-V2's
  `intermediate_layer_idx` for vitl, 0-based 4/11/17/23), neck widths [256, 512, 1024, 1024], fusion 256,
  head 32: 335.3 M parameters. Image processor: short side to 518 keeping the aspect ratio, sides multiples
  of 14, bicubic, ImageNet mean/std.
- RIFE v4.25 / v4.26 (`train_log/flownet.pkl`): preprocessors/interpolation/rife.py's IFNet at its defaults
  is already the real network (5.66 M parameters; its test pins the count); the tiny builder only narrows
  the block widths. The training-only `teacher.*` / `caltime.*` tensors of the real file are represented by
  small stand-ins (the loader drops them by name).
- OpenPose body (`body_pose_model.pth`): controlnet-aux's `bodypose_model` has no size knobs, so the tiny
  builder already writes the full-size 52.3 M-parameter network (about 210 MB); it is reused.
- NSFW classifier (Falconsai/nsfw_image_detection): ViT-B/16 at 224 (transformers' `ViTConfig` defaults)
  with two labels: 85.8 M parameters; processor 224x224, bilinear, mean/std 0.5.
- Prompt LLM (Qwen/Qwen2.5-3B-Instruct): Qwen2 with hidden 2048, MLP 11008, 36 layers, 16 query and 2
  key/value heads, vocabulary 151936, tied embeddings, RoPE theta 1e6: 3.09 B parameters, stored in
  bfloat16 as the real repository is (6.2 GB; the loader makes it float32 on a CPU: 12.3 GB). Its tokenizer
  is a stand-in: a byte-level BPE trained here on the expander's own instruction text (so the prompt comes
  to about one token per word, like Qwen's on plain English), with Qwen's ChatML template.

Not buildable here, hence absent: FILM (the TorchScript export carries FILM's own network code, which is
neither in this repository nor in any installed package) and DWPose (YOLOX-L and RTMPose-l ONNX graphs; their
architectures would need mmdet/mmpose code that is not here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from preprocessors.annotators.tiny import (
    CHATML_TEMPLATE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_tiny_openpose_body,
)

if TYPE_CHECKING:
    from transformers import DepthAnythingConfig, DPTConfig, PreTrainedTokenizerFast, Qwen2Config, ViTConfig

Model = TypeVar("Model")

_SEED = 0

# Parameter counts of the networks as built here (tests/benchmarks/test_annotators.py checks them on the meta
# device).
MIDAS_PARAMETERS = 122_377_985
DEPTH_ANYTHING_PARAMETERS = 335_315_649
RIFE_PARAMETERS = 5_664_776
OPENPOSE_BODY_PARAMETERS = 52_311_446
NSFW_PARAMETERS = 85_800_194
PROMPT_LLM_PARAMETERS = 3_085_938_688

MIDAS_SIZE = 384
DEPTH_ANYTHING_SIZE = 518
NSFW_SIZE = 224
PROMPT_LLM_STORED_DTYPE = torch.bfloat16


def midas_config() -> DPTConfig:
    from transformers import BitConfig, DPTConfig

    backbone = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[3, 4, 9],
        hidden_sizes=[256, 512, 1024, 2048],  # BiT's widths; the stem stops after stage 3 (1024)
        embedding_size=64,
        num_groups=32,
        out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    return DPTConfig(
        is_hybrid=True,
        backbone_config=backbone,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=MIDAS_SIZE,
        patch_size=16,
        backbone_out_indices=[2, 5, 8, 11],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        fusion_hidden_size=256,
        head_in_index=-1,
        use_batch_norm_in_fusion_residual=False,
        backbone_featmap_shape=[1, 1024, MIDAS_SIZE // 16, MIDAS_SIZE // 16],
        neck_ignore_stages=[0, 1],
    )


def depth_anything_config() -> DepthAnythingConfig:
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        mlp_ratio=4,
        image_size=DEPTH_ANYTHING_SIZE,
        patch_size=14,
        out_indices=[5, 12, 18, 24],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=1024,
        patch_size=14,
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[256, 512, 1024, 1024],
        fusion_hidden_size=256,
        head_hidden_size=32,
        depth_estimation_type="relative",
    )


def nsfw_config() -> ViTConfig:
    from transformers import ViTConfig

    return ViTConfig(
        image_size=NSFW_SIZE,
        patch_size=16,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )


def prompt_llm_config(eos_token_id: int | None = None, pad_token_id: int | None = None) -> Qwen2Config:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def _seeded(make: Callable[[], Model]) -> Model:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return make()


def build_full_midas(dest: Path) -> Path:
    """Intel/dpt-hybrid-midas layout (config.json, model.safetensors, preprocessor_config.json), ~490 MB."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    dest = Path(dest)
    model = _seeded(lambda: DPTForDepthEstimation(midas_config()).eval())
    model.save_pretrained(dest)
    DPTImageProcessor(
        size={"height": MIDAS_SIZE, "width": MIDAS_SIZE}, keep_aspect_ratio=False, resample=3,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    ).save_pretrained(dest)
    return dest


def build_full_depth_anything(dest: Path) -> Path:
    """Depth-Anything-V2-Large-hf layout, ~1.3 GB."""
    from transformers import DepthAnythingForDepthEstimation, DPTImageProcessor

    dest = Path(dest)
    model = _seeded(lambda: DepthAnythingForDepthEstimation(depth_anything_config()).eval())
    model.save_pretrained(dest)
    DPTImageProcessor(
        size={"height": DEPTH_ANYTHING_SIZE, "width": DEPTH_ANYTHING_SIZE},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        resample=3,
        do_pad=False,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(dest)
    return dest


def build_full_rife(dest: Path) -> Path:
    """Practical-RIFE v4.26 `flownet.pkl` layout at the real widths, ~23 MB."""
    from preprocessors.interpolation.rife import RIFE_FILE, IFNet

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    net = _seeded(IFNet)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.teacher.lastconv.0.bias"] = torch.zeros(52)
    state["module.caltime.0.bias"] = torch.zeros(8)
    torch.save(state, dest / RIFE_FILE)
    return dest


def build_full_openpose_body(dest: Path) -> Path:
    """`body_pose_model.pth`: the tiny builder's file, which is the full-size network (~210 MB)."""
    return build_tiny_openpose_body(dest)


def build_full_nsfw_classifier(dest: Path) -> Path:
    """Falconsai/nsfw_image_detection layout, ~340 MB."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    dest = Path(dest)
    model = _seeded(lambda: ViTForImageClassification(nsfw_config()).eval())
    model.save_pretrained(dest)
    ViTImageProcessor(
        size={"height": NSFW_SIZE, "width": NSFW_SIZE}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(dest)
    return dest


def _stand_in_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with Qwen's special tokens and ChatML template, trained on the expander's texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from preprocessors.annotators.prompt_expansion import DEFAULT_TASK, SYSTEM_PROMPT, TASK_DESCRIPTIONS

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    corpus = [SYSTEM_PROMPT, DEFAULT_TASK, *TASK_DESCRIPTIONS.values(), "a cat walks on a wall",
              "system user assistant"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    # A vocabulary larger than the corpus needs: training stops once every word is one token.
    trainer = trainers.BpeTrainer(
        vocab_size=8000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_full_prompt_llm(dest: Path) -> Path:
    """Qwen2.5-3B-Instruct layout: config, bfloat16 safetensors (6.2 GB), a stand-in tokenizer.

    Building needs about 6.2 GB of memory (the model is made in bfloat16) and 6.2 GB of disk.
    """
    from transformers import GenerationConfig, Qwen2ForCausalLM

    dest = Path(dest)
    tokenizer = _stand_in_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = prompt_llm_config(eos_token_id=eos, pad_token_id=pad)
    model = _seeded(lambda: Qwen2ForCausalLM._from_config(config, dtype=PROMPT_LLM_STORED_DTYPE).eval())
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
    model.save_pretrained(dest)
    del model
    tokenizer.save_pretrained(dest)
    return dest
