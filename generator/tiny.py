"""The tiny random-weight Stable Diffusion pipeline: real diffusers classes, random weights.

Built from configs with a fixed seed, so every machine builds the same weights; saved as an
ordinary diffusers folder (safetensors) and then loaded like any local model. It runs the real
code path (text encoder, UNet denoising loop with a real scheduler, VAE decode) in a fraction of
a second on a CPU. Its pictures are noise-like: it exists for tests and for running offline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from generator.tokenizer import build_tokenizer

WEIGHTS_SEED = 20260101


def build_tiny_pipeline() -> StableDiffusionPipeline:
    """Construct the pipeline in memory, deterministically."""
    torch.manual_seed(WEIGHTS_SEED)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    torch.manual_seed(WEIGHTS_SEED + 1)
    vae = tiny_vae(layers_per_block=1)
    torch.manual_seed(WEIGHTS_SEED + 2)
    tokenizer = build_tokenizer()
    return sd_pipeline(
        vae=vae, text_encoder=tiny_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet, scheduler=tiny_scheduler()
    )


def tiny_vae(layers_per_block: int) -> AutoencoderKL:
    """A 4-level VAE (8x downsampling, like Stable Diffusion's) at tiny widths."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=256,
    )


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 2-layer, 32-wide CLIP text encoder over the byte tokenizer's vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def tiny_scheduler() -> EulerDiscreteScheduler:
    """Stable Diffusion's noise schedule, Euler steps with trailing timestep spacing."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        timestep_spacing="trailing",
        steps_offset=1,
    )


def sd_pipeline(**components: Any) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline from components, without the safety checker (it needs downloaded weights)."""
    return StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def ensure_tiny_model(directory: Path) -> Path:
    """Save the tiny pipeline to ``directory`` once (atomically) and return the folder."""
    if (directory / "model_index.json").exists():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory.parent) as tmp:
        staging = Path(tmp) / "model"
        pipeline: Any = build_tiny_pipeline()  # diffusers' stubs omit the mixin methods
        pipeline.save_pretrained(staging, safe_serialization=True)
        try:
            staging.rename(directory)
        except OSError:
            if not (directory / "model_index.json").exists():  # lost a race to another process: fine
                raise
    return directory
