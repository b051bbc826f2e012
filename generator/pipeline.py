"""``Generator``: load a diffusers text-to-image pipeline once, run requests on it.

Loading goes through the auto pipelines (Stable Diffusion 1.x/2.x, SDXL, SD-Turbo and others the
auto classes know). On CUDA the pipeline runs in fp16 with PyTorch's scaled-dot-product attention,
channels-last UNet memory layout and, optionally, ``torch.compile``; on CPU it runs in fp32.

Each image ``i`` of a request uses its own ``torch.Generator`` seeded ``seed + i``, and the
request's batch size is recorded, so any image can be generated again bit for bit.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from generator.lora_check import check_lora_fits
from generator.models import ModelCatalog, ModelError, ModelSource, WeightHasher
from generator.request import GenerationRequest, LoraSpec
from generator.schedulers import SCHEDULERS

__all__ = ["GeneratedImage", "GenerationCancelled", "GenerationRequest", "Generator", "LoraSpec"]


class GenerationCancelled(Exception):
    """The request was cancelled while it ran."""


@dataclass
class GeneratedImage:
    rgb: np.ndarray
    index: int
    seed: int
    provenance: dict[str, Any] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    from provenance import __version__

    return {
        "provenance": __version__,
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "torch": torch.__version__,
    }


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class _Loaded:
    source: ModelSource
    pipe: Any
    weights: dict[str, str]
    base_scheduler_config: Any


class Generator:
    """Holds loaded pipelines (one per model) and runs requests. Thread-safe: one request at a time."""

    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        device: str | None = None,
        compile_unet: bool = False,
        prompt_privacy: bool = False,
        hasher: WeightHasher | None = None,
        model_gate: Callable[[Path], object] | None = None,
    ) -> None:
        """``model_gate`` (PROVENANCE_REQUIRE_REGISTERED_MODELS) is called with a model's folder or file and
        each LoRA file before it is loaded, and raises ``ModelError`` for one it refuses."""
        self.catalog = catalog
        self.model_gate = model_gate
        self.device = device or default_device()
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.compile_unet = compile_unet
        self.prompt_privacy = prompt_privacy
        self.hasher = hasher or WeightHasher(catalog.models_dir / "weight-hashes.json")
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()

    # --- loading ---------------------------------------------------------------------------
    def _load_pipe(self, source: ModelSource) -> Any:
        import diffusers
        import transformers
        from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline, StableDiffusionXLPipeline

        # Loading bars and advice belong to notebooks; the service reports progress its own way.
        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()

        try:
            if source.kind in ("builtin", "folder"):
                return AutoPipelineForText2Image.from_pretrained(
                    source.location, dtype=self.dtype, local_files_only=True
                )
            if source.kind == "single_file":
                from safetensors import safe_open

                is_xl = False
                if source.location.endswith(".safetensors"):
                    with safe_open(source.location, framework="pt") as fh:
                        is_xl = any(k.startswith("conditioner.embedders.1") for k in fh.keys())  # noqa: SIM118
                cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
                kwargs: dict[str, Any] = {"dtype": self.dtype}
                if source.config_dir:
                    kwargs.update(config=source.config_dir, local_files_only=True)
                elif not self.catalog.allow_hub:
                    raise ModelError(
                        f"Single-file checkpoint {source.id!r} needs a local diffusers config folder offline "
                        "(PROVENANCE_SINGLE_FILE_CONFIGS)."
                    )
                return cls.from_single_file(source.location, **kwargs)
            return AutoPipelineForText2Image.from_pretrained(source.location, dtype=self.dtype)
        except ModelError:
            raise
        except Exception as exc:  # diffusers raises many types for a broken checkpoint
            raise ModelError(f"Cannot load model {source.id!r}: {type(exc).__name__}: {exc}") from None

    def _optimise(self, pipe: Any) -> None:
        pipe.set_progress_bar_config(disable=True)
        if not self.device.startswith("cuda"):
            return
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe.unet.set_attn_processor(AttnProcessor2_0())  # fused SDPA kernels
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        if self.compile_unet:
            pipe.unet = torch.compile(pipe.unet, mode="max-autotune", fullgraph=True)

    def register(self, model_id: str, pipe: Any, *, label: str | None = None) -> None:
        """Use an already-built pipeline under ``model_id`` (benchmarks, embedding applications)."""
        pipe.to(self.device)
        self._optimise(pipe)
        source = ModelSource(model_id, "in_memory", model_id, label or model_id)
        self._loaded[model_id] = _Loaded(source, pipe, {}, dict(pipe.scheduler.config))

    def load(self, spec: str | None) -> _Loaded:
        if spec in self._loaded:
            return self._loaded[spec]
        source = self.catalog.resolve(spec)
        if source.id not in self._loaded:
            if self.model_gate is not None:
                self.model_gate(Path(source.location))  # before any byte of it is deserialised
            pipe = self._load_pipe(source)
            pipe.to(self.device)
            self._optimise(pipe)
            weights = self._hub_weights(pipe) if source.kind == "hub" else self.hasher.weights_of(Path(source.location))
            self._loaded[source.id] = _Loaded(source, pipe, weights, dict(pipe.scheduler.config))
        return self._loaded[source.id]

    def _hub_weights(self, pipe: Any) -> dict[str, str]:
        folder = getattr(pipe, "_name_or_path", None) or pipe.config.get("_name_or_path")
        return self.hasher.weights_of(Path(folder)) if folder and Path(folder).exists() else {}

    # --- running ---------------------------------------------------------------------------
    def _set_scheduler(self, loaded: _Loaded, name: str | None) -> str:
        import diffusers

        if name is None:
            cls = getattr(diffusers, loaded.base_scheduler_config.get("_class_name", "EulerDiscreteScheduler"))
        elif name in SCHEDULERS:
            cls = getattr(diffusers, SCHEDULERS[name])
        else:
            raise ModelError(f"Unknown scheduler {name!r}. Choose one of: {', '.join(SCHEDULERS)}.")
        loaded.pipe.scheduler = cls.from_config(loaded.base_scheduler_config)
        return cls.__name__

    def _apply_loras(self, loaded: _Loaded, loras: tuple[LoraSpec, ...]) -> list[dict[str, Any]]:
        if not loras:
            return []
        names, weights, described = [], [], []
        for i, lora in enumerate(loras):
            path = Path(lora.path)
            if not path.is_file():
                raise ModelError(f"LoRA file {lora.path!r} not found.")
            if self.model_gate is not None:
                try:
                    self.model_gate(path)
                except ModelError:
                    if i:
                        loaded.pipe.unload_lora_weights()  # the ones applied before this one
                    raise
            name = f"lora{i}"
            try:
                check_lora_fits(loaded.pipe, path)  # another architecture's LoRA: one clear sentence, not a traceback
                loaded.pipe.load_lora_weights(str(path), adapter_name=name)
            except Exception as exc:
                loaded.pipe.unload_lora_weights()
                raise ModelError(f"Cannot load LoRA {path.name!r}: {exc}") from None
            names.append(name)
            weights.append(lora.weight)
            described.append(
                {
                    "file": path.name,
                    "path": str(path.resolve()),
                    "weight": lora.weight,
                    "sha256": self.hasher.hash(path),
                }
            )
        loaded.pipe.set_adapters(names, adapter_weights=weights)
        return described

    def describe(
        self, request: GenerationRequest, loaded: _Loaded, scheduler: str, loras: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The generation provenance recorded in the manifest and the database."""
        prompt: dict[str, Any]
        if self.prompt_privacy:
            prompt = {"prompt_sha256": hashlib.sha256(request.prompt.encode()).hexdigest()}
            if request.negative_prompt:
                prompt["negative_prompt_sha256"] = hashlib.sha256(request.negative_prompt.encode()).hexdigest()
        else:
            prompt = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
        return {
            "model": {**loaded.source.to_dict(), "weights_sha256": loaded.weights},
            "loras": loras,
            "pipeline_class": type(loaded.pipe).__name__,
            "scheduler": scheduler,
            "scheduler_option": request.scheduler,
            "steps": request.steps,
            "guidance_scale": request.guidance_scale,
            "width": request.width,
            "height": request.height,
            "batch_size": request.num_images,
            **prompt,
            "device": self.device.split(":")[0],
            "dtype": str(self.dtype).removeprefix("torch."),
            "versions": library_versions(),
        }

    def generate(
        self,
        request: GenerationRequest,
        *,
        on_step: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[GeneratedImage]:
        """Run one request; returns one image per ``num_images`` with its provenance."""
        with self._lock:
            loaded = self.load(request.model)
            scheduler = self._set_scheduler(loaded, request.scheduler)
            loras = self._apply_loras(loaded, request.loras)
            cancelled = False

            def step_end(pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
                nonlocal cancelled
                if on_step is not None:
                    on_step(step + 1, request.steps)
                if should_cancel is not None and should_cancel():
                    cancelled = True
                    pipe._interrupt = True
                return kwargs

            generators = [
                torch.Generator(device=self.device).manual_seed(request.seed + i) for i in range(request.num_images)
            ]
            try:
                with torch.inference_mode():
                    output = loaded.pipe(
                        prompt=[request.prompt] * request.num_images,
                        negative_prompt=[request.negative_prompt] * request.num_images
                        if request.negative_prompt
                        else None,
                        num_inference_steps=request.steps,
                        guidance_scale=request.guidance_scale,
                        width=request.width,
                        height=request.height,
                        generator=generators,
                        output_type="np",
                        callback_on_step_end=step_end,
                    )
            finally:
                if loras:
                    loaded.pipe.unload_lora_weights()
            if cancelled:
                raise GenerationCancelled("cancelled")
            described = self.describe(request, loaded, scheduler, loras)
            images = (np.clip(output.images, 0, 1) * 255).round().astype(np.uint8)
            return [
                GeneratedImage(
                    rgb=images[i],
                    index=i,
                    seed=request.seed + i,
                    provenance={**described, "seed": request.seed + i, "index": i},
                )
                for i in range(request.num_images)
            ]
