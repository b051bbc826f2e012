"""Does a LoRA file fit a pipeline? Checked before ``load_lora_weights``, so a mismatch is one clear sentence.

diffusers loads a LoRA whose layer names match nothing in the model with a warning and no effect, and one
whose shapes differ with a long PEFT traceback. A LoRA made for another architecture (an SD 1.5 LoRA on
SDXL, or on the tiny test model) is neither: it is the wrong file, and the caller should be told so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Where the layer name ends in each key format diffusers reads (its own, PEFT's, and the old attention processors).
_MARKERS = (".lora.down.", ".lora.up.", ".lora_A.", ".lora_B.", ".lora_linear_layer.down.", ".lora_linear_layer.up.")
_DOWN = (".lora.down.", ".lora_A.", ".lora_linear_layer.down.")


class LoraMismatchError(ValueError):
    """The LoRA's layers are not this model's layers (another architecture): the message names one."""


def _split(key: str) -> tuple[str, bool] | None:
    """``(layer name, is the down projection)`` of a LoRA weight key; None for alphas and other entries."""
    for marker in _MARKERS:
        if marker in key and key.endswith(".weight"):
            return key.split(marker, 1)[0], marker in _DOWN
    return None


def _components(pipe: Any) -> dict[str, torch.nn.Module]:
    return {
        name: module
        for name in ("unet", "transformer", "text_encoder", "text_encoder_2")
        if isinstance(module := getattr(pipe, name, None), torch.nn.Module)
    }


def _base_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The frozen weight of a layer, also when a PEFT adapter already wraps it (``base_layer``)."""
    base = getattr(module, "base_layer", module)
    weight = getattr(base, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


def check_lora_fits(pipe: Any, path: Path) -> int:
    """Raise ``LoraMismatchError`` unless every layer of the LoRA at ``path`` exists in ``pipe`` with its shape.

    Returns how many layers the LoRA adapts. Reads the file through the pipeline's own ``lora_state_dict``
    (which also converts the Kohya and older formats), then compares each layer with the model's.
    """
    try:
        state_dict = pipe.lora_state_dict(str(path))[0]
    except Exception as exc:  # diffusers raises several types for a file that is not a LoRA
        raise LoraMismatchError(f"{path.name} is not a LoRA this pipeline can read: {exc}") from None
    components = _components(pipe)
    modules = {name: dict(component.named_modules()) for name, component in components.items()}
    layers: set[str] = set()
    for key, tensor in state_dict.items():
        split = _split(key)
        if split is None:
            continue
        layer, down = split
        prefix, _, name = layer.partition(".")
        if prefix not in components:  # a LoRA saved without the component prefix is a UNet LoRA
            prefix, name = ("unet" if "unet" in components else "transformer"), layer
        module = modules.get(prefix, {}).get(name)
        weight = _base_weight(module) if module is not None else None
        if weight is None:
            raise LoraMismatchError(
                f"{path.name} is a LoRA for another model: this {type(pipe).__name__} has no layer {prefix}.{name}."
            )
        want = weight.shape[1] if down else weight.shape[0]
        have = tensor.shape[1] if down else tensor.shape[0]
        if want != have:
            raise LoraMismatchError(
                f"{path.name} is a LoRA for another model: its layer {prefix}.{name} is {have} wide where this "
                f"{type(pipe).__name__}'s is {want}."
            )
        layers.add(layer)
    if not layers:
        raise LoraMismatchError(f"{path.name} holds no LoRA layers.")
    return len(layers)
