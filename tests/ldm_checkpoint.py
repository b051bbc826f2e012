"""Test helper: a tiny Stable Diffusion 1.x pipeline written as a single-file checkpoint.

Model sites distribute SD 1.x as one ``.safetensors`` in the original (LDM / CompVis) key layout.
Nothing of that size can be downloaded here, so the tests build a pipeline with the SD 1.x
topology (4 UNet levels, 2 layers each, attention on the first three) at tiny widths, and rename
its diffusers keys to the LDM layout, the inverse of what diffusers' single-file loader does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file

from generator.tiny import sd_pipeline, tiny_scheduler, tiny_text_encoder, tiny_vae
from generator.tokenizer import build_tokenizer


def sd1_topology_pipeline(seed: int = 7) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = tiny_vae(layers_per_block=2)
    tokenizer = build_tokenizer()
    return sd_pipeline(
        vae=vae, text_encoder=tiny_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet, scheduler=tiny_scheduler()
    )


def _unet_renames() -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs for the SD 1.x UNet layout."""
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for level in range(4):
        for layer in range(2):
            pairs.append((f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{3 * level + layer + 1}.0."))
            if level < 3:
                pairs.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{3 * level + layer + 1}.1."))
        for layer in range(3):
            pairs.append((f"up_blocks.{level}.resnets.{layer}.", f"output_blocks.{3 * level + layer}.0."))
            if level > 0:
                pairs.append((f"up_blocks.{level}.attentions.{layer}.", f"output_blocks.{3 * level + layer}.1."))
        if level < 3:
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{3 * (level + 1)}.0.op."))
            pairs.append(
                (f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{3 * level + 2}.{1 if level == 0 else 2}.")
            )
    return pairs


RESNET_PARTS = [
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
]


def _rename(key: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _unet_key(key: str) -> str:
    ldm = _rename(key, _unet_renames())
    if ".resnets." not in key:
        return ldm
    # The resnet's own part follows the block prefix: input_blocks.N.0.<part> or middle_block.N.<part>
    parts = ldm.split(".")
    head = 3 if parts[0] in ("input_blocks", "output_blocks") else 2
    rest = ".".join(parts[head:]) + "."
    for old, new in RESNET_PARTS:
        if rest.startswith(old):
            return ".".join(parts[:head]) + "." + (new + rest[len(old) :]).rstrip(".")
    return ldm


def _vae_key(key: str) -> str:
    pairs = [
        ("encoder.conv_norm_out.", "encoder.norm_out."),
        ("decoder.conv_norm_out.", "decoder.norm_out."),
        ("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
        ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
    ]
    for side in ("encoder", "decoder"):
        for i in range(2):
            pairs.append((f"{side}.mid_block.resnets.{i}.", f"{side}.mid.block_{i + 1}."))
    for i in range(4):
        for j in range(2):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        for j in range(3):
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{3 - i}.block.{j}."))
        if i < 3:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{3 - i}.upsample."))
    ldm = _rename(key, pairs).replace("conv_shortcut.", "nin_shortcut.")
    for old, new in (
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ):
        if ".attn_1." in ldm:
            ldm = ldm.replace(".attn_1." + old, ".attn_1." + new)
    return ldm


def write_single_file(pipe: StableDiffusionPipeline, path: Path) -> Path:
    """Save ``pipe`` as one LDM-layout safetensors checkpoint."""
    state: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        state["model.diffusion_model." + _unet_key(key)] = value.contiguous()
    for key, value in pipe.vae.state_dict().items():
        ldm = _vae_key(key)
        if ".attn_1." in ldm and ldm.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        state["first_stage_model." + ldm] = value.contiguous()
    for key, value in pipe.text_encoder.state_dict().items():
        # The original checkpoints keep transformers' full CLIPTextModel names (text_model.*).
        name = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + name] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
