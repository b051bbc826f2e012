"""The one shape of a generation request, from the API body and the CLI's options to the job and the generator.

``GenerationSpec`` is what a caller asks for (the seed may be left to chance, the model to the settings);
``GenerationRequest`` is the same request once resolved (a seed chosen, the model named), which the job stores
and the generator runs. The defaults and the limits a schema can state live here and nowhere else; the limits
that depend on the settings (image side, steps) and the model and LoRA checks are ``JobService.prepare``'s.

Torch-free: the API and the CLI import it without loading diffusers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_CHARS = 2000
MAX_IMAGES = 8
MAX_LORAS = 8


class LoraSpec(BaseModel):
    """A LoRA applied to a generation, with its weight."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(description="Path of a LoRA .safetensors file on the generation machine.")
    weight: float = Field(default=1.0, ge=-4.0, le=4.0)

    def __init__(self, path: str | None = None, weight: float | None = None, /, **data: Any) -> None:
        """Positionally (``LoraSpec(path, weight)``) or by keyword, like the dataclass it replaced."""
        if path is not None:
            data["path"] = path
        if weight is not None:
            data["weight"] = weight
        super().__init__(**data)


class GenerationSpec(BaseModel):
    """A text-to-image request. Limits on size and steps come from the settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, lt=2**32, description="Default: random; recorded either way.")
    steps: int = Field(default=25, ge=1)
    guidance_scale: float = Field(default=7.5, ge=0.0, le=30.0)
    width: int = Field(default=512, ge=64)
    height: int = Field(default=512, ge=64)
    num_images: int = Field(default=1, ge=1, le=MAX_IMAGES)
    model: str | None = Field(
        default=None, description="Model name, local folder or checkpoint; default from settings."
    )
    loras: tuple[LoraSpec, ...] = Field(default_factory=tuple, max_length=MAX_LORAS)
    scheduler: str | None = Field(default=None, description="euler, euler_a, ddim, dpmpp_2m, unipc, ...")


class GenerationRequest(GenerationSpec):
    """A resolved request, as a job stores it and the generator runs it: image ``i`` uses seed ``seed + i``."""

    seed: int = Field(default=0, ge=0, lt=2**32)

    def __init__(self, prompt: str | None = None, /, **data: Any) -> None:
        """The prompt positionally (``GenerationRequest("a fox", seed=3)``) or by keyword."""
        if prompt is not None:
            data["prompt"] = prompt
        super().__init__(**data)

    def stored(self) -> dict[str, Any]:
        """The request as plain JSON data, as a job row keeps it (``model_validate`` reads it back)."""
        return self.model_dump(mode="json")
