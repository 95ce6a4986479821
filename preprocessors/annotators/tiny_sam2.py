"""A tiny random SAM 2 video model in facebook/sam2.1-hiera-* layout, for tests and `--model tiny`.

The smallest shapes transformers' Sam2VideoModel runs with: a 128-pixel input, a 5-block Hiera, and a
128-wide memory and mask decoder (the memory attention's key width is fixed at 64, and object pointers
are split into 64-wide tokens, which needs a hidden size above 64). About 5 MB.
"""

from __future__ import annotations

from pathlib import Path

import torch

_SEED = 0
SIZE = 128
HIDDEN = 128


def build_tiny_sam2(dest: Path) -> Path:
    from transformers import (
        Sam2HieraDetConfig,
        Sam2ImageProcessor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
        Sam2VisionConfig,
    )
    from transformers.models.sam2_video.configuration_sam2_video import (
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
    )

    dest = Path(dest)
    backbone = Sam2HieraDetConfig(
        hidden_size=16, num_attention_heads=1, image_size=[SIZE, SIZE], blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[8, 4, 4, 2], global_attention_blocks=[3],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16], fpn_hidden_size=HIDDEN,
        backbone_feature_sizes=[[SIZE // 4] * 2, [SIZE // 8] * 2, [SIZE // 16] * 2],
    )
    config = Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=HIDDEN, image_size=SIZE,
                                                           mask_input_channels=4),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=HIDDEN, mlp_dim=64, num_attention_heads=2,
                                                       iou_head_hidden_dim=HIDDEN),
        image_size=SIZE, memory_attention_hidden_size=HIDDEN, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_attention_rope_feat_sizes=[SIZE // 16] * 2,
        memory_encoder_hidden_size=HIDDEN, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=HIDDEN, memory_fuser_embed_dim=HIDDEN, memory_fuser_intermediate_dim=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = Sam2VideoModel(config).eval()
    model.save_pretrained(dest)
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={"height": SIZE, "width": SIZE},
                                           mask_size={"height": SIZE // 4, "width": SIZE // 4}),
        video_processor=Sam2VideoVideoProcessor(size={"height": SIZE, "width": SIZE}),
        target_size=SIZE,
    )
    processor.save_pretrained(dest)
    return dest
