"""Full-size Stable Diffusion 1.5 and SDXL architectures with random weights, for benchmarks.

The UNet, VAE and text encoders are built from the published model configs: the compute per
step is the real model's, without downloading a single weight. The pictures are noise.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from generator.tiny import sd_pipeline
from generator.tokenizer import build_tokenizer

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}
SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}


def _text_config(tokenizer: Any, **sizes: Any) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="quick_gelu" if sizes["hidden_size"] == 768 else "gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )


def build(arch: str, device: str, dtype: torch.dtype) -> Any:
    """A random-weight ``sd15`` or ``sdxl`` pipeline, its weights created directly on ``device``."""
    if arch not in ("sd15", "sdxl"):
        raise ValueError(f"unknown architecture {arch!r}: sd15 or sdxl")
    tokenizer = build_tokenizer()
    scheduler = EulerDiscreteScheduler(**SCHEDULER)  # host-side state: built outside the device context
    with torch.device(device):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            **VAE_CONFIG,
            sample_size=1024 if arch == "sdxl" else 512,
            force_upcast=arch == "sdxl",
            scaling_factor=0.13025 if arch == "sdxl" else 0.18215,
        )
        text_encoder = CLIPTextModel(_text_config(tokenizer, **CLIP_L))
        unet = UNet2DConditionModel(**(SD15_UNET if arch == "sd15" else SDXL_UNET))
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer, **CLIP_BIGG)) if arch == "sdxl" else None
    pipe: Any
    if arch == "sd15":
        pipe = sd_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    else:
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=build_tokenizer(),
            unet=unet,
            scheduler=scheduler,
        )
    return pipe.to(dtype=dtype)
