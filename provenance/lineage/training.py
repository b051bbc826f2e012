"""The PEFT LoRA trainer: the standard diffusers text-to-image LoRA recipe, and a file that says where it came from.

The recipe is diffusers' ``examples/text_to_image/train_text_to_image_lora.py``: the VAE and the text encoder
are frozen; the UNet gets LoRA adapters (PEFT ``LoraConfig``) on the attention projections ``to_q``, ``to_k``,
``to_v`` and ``to_out.0``; each step encodes an image to latents, adds noise at a random timestep with a
``DDPMScheduler`` built from the pipeline's scheduler config, and minimises the MSE between the UNet's prediction
and the target (the noise, or the velocity for v-prediction models) with AdamW. On CUDA the frozen weights run
in bf16 (fp16 where bf16 is missing, with a gradient scaler) with gradient checkpointing; the LoRA weights stay
fp32. On the CPU everything is fp32 (the tiny test pipeline trains a few steps in seconds).

The output is the ``.safetensors`` that ``pipe.load_lora_weights`` reads (``get_peft_model_state_dict`` ->
``convert_state_dict_to_diffusers`` -> ``save_lora_weights``), with the lineage in its metadata
(``provenance.*`` keys: base model digest, dataset id and root, parameters, library versions, training id)
and the loss curve (CSV) beside it. Both are written to temporary names and renamed when training has
finished: a failed or cancelled run leaves no file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from provenance.errors import InputError, ProvenanceError

TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name when the output is a folder
META_PREFIX = "provenance."
MAX_RANK = 256
MAX_STEPS = 100_000


class TrainingRequestError(InputError):
    """Training parameters, inputs or output path that cannot be used; the message says which."""

    code = "invalid_training_request"


class TrainingCancelled(ProvenanceError):
    """The run was cancelled between two steps; nothing was written."""

    code = "training_cancelled"


class Example(Protocol):
    """One training image: ``DatasetService.training_items`` yields these (``TrainingItem``)."""

    @property
    def rgb(self) -> np.ndarray:
        """The image, uint8 HxWx3."""

    @property
    def caption(self) -> str | None:
        """Its caption (None: trained with an empty prompt)."""


@dataclass(frozen=True)
class PlainExample:
    """An ``Example`` from an array and a caption (tests, benchmarks, embedding applications)."""

    rgb: np.ndarray
    caption: str | None = None
    path: str = ""


@dataclass(frozen=True)
class TrainingParams:
    """The hyperparameters recorded in the file's metadata and the training row."""

    rank: int = 16
    steps: int = 500
    lr: float = 1e-4
    resolution: int = 512
    seed: int = 0
    batch_size: int = 1

    def checked(self) -> TrainingParams:
        """These parameters, or ``TrainingRequestError`` naming every value out of bounds."""
        problems = []
        if not 1 <= self.rank <= MAX_RANK:
            problems.append(f"rank must be between 1 and {MAX_RANK}, not {self.rank}")
        if not 1 <= self.steps <= MAX_STEPS:
            problems.append(f"steps must be between 1 and {MAX_STEPS}, not {self.steps}")
        if not 0 < self.lr <= 1:
            problems.append(f"lr must be above 0 and at most 1, not {self.lr}")
        if self.resolution % 8 or not 64 <= self.resolution <= 2048:
            problems.append(f"resolution must be a multiple of 8 between 64 and 2048, not {self.resolution}")
        if not 0 <= self.seed < 2**63:
            problems.append(f"seed must be between 0 and 2**63-1, not {self.seed}")
        if not 1 <= self.batch_size <= 64:
            problems.append(f"batch_size must be between 1 and 64, not {self.batch_size}")
        if problems:
            raise TrainingRequestError("; ".join(problems))
        return self

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-ready values."""
        return asdict(self)


@dataclass(frozen=True)
class Lineage:
    """What the LoRA file names as its origin (the contract's ``provenance.*`` metadata keys)."""

    base_model_digest: str
    dataset_id: str
    dataset_root: str
    training_id: str


@dataclass
class TrainingResult:
    """The written LoRA, its loss curve, and what its metadata says."""

    path: Path
    loss_path: Path
    losses: list[float]
    metadata: dict[str, str]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


StepCallback = Callable[[int, int, float], None]  # (step, steps, loss)


def library_versions() -> dict[str, str]:
    """The versions of the libraries that shaped the weights (recorded in the file and the training row)."""
    from provenance import __version__

    out = {"provenance": __version__, "torch": torch.__version__}
    for package in ("diffusers", "transformers", "peft", "safetensors", "accelerate"):
        with contextlib.suppress(Exception):
            out[package] = version(package)
    return out


def output_file(out: Path) -> Path:
    """The ``.safetensors`` path for ``-o OUT``: OUT itself when it names one, else ``OUT/pytorch_lora_weights...``."""
    return out if out.suffix == ".safetensors" else out / LORA_FILE


def loss_file(weights: Path) -> Path:
    """Where the loss curve of ``weights`` is written: beside it, ``<stem>.loss.csv``."""
    return weights.with_name(weights.stem + ".loss.csv")


def check_output(out: Path) -> Path:
    """The output file for ``out``; ``TrainingRequestError`` when it exists already (never overwritten)."""
    target = output_file(out)
    for path in (target, loss_file(target)):
        if path.exists():
            raise TrainingRequestError(f"{path} exists already; name a new output.")
    if target.parent.exists() and not target.parent.is_dir():
        raise TrainingRequestError(f"{target.parent} is not a folder.")
    return target


def check_pipeline(pipe: Any) -> None:
    """Refuse a pipeline the recipe does not fit (one UNet, one CLIP text encoder and a VAE: SD 1.x/2.x)."""
    parts = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    missing = [name for name in parts if getattr(pipe, name, None) is None]
    if missing or getattr(pipe, "text_encoder_2", None) is not None:
        raise TrainingRequestError(
            f"LoRA training supports Stable Diffusion 1.x/2.x pipelines (a UNet, one CLIP text encoder, a VAE); "
            f"{type(pipe).__name__} is not one."
        )


def preprocess(rgb: np.ndarray, resolution: int) -> torch.Tensor:
    """Resize the short side to ``resolution``, centre-crop a square, scale to [-1, 1] (CHW float)."""
    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


@dataclass
class _Precision:
    """How a device trains: the frozen weights' dtype, autocast, gradient scaling, checkpointing."""

    device: torch.device
    weight_dtype: torch.dtype
    scaler: Any = None

    @classmethod
    def for_device(cls, device: str) -> _Precision:
        dev = torch.device(device)
        if dev.type != "cuda":
            return cls(dev, torch.float32)
        if torch.cuda.is_bf16_supported():
            return cls(dev, torch.bfloat16)
        return cls(dev, torch.float16, torch.amp.GradScaler("cuda"))

    @property
    def name(self) -> str:
        return str(self.weight_dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.weight_dtype)


class LoraTrainer:
    """Trains one LoRA on one pipeline. The pipeline's UNet gets the adapter: use a pipeline no one else runs."""

    def __init__(self, pipe: Any, params: TrainingParams, *, device: str = "cpu") -> None:
        check_pipeline(pipe)
        self.pipe = pipe
        self.params = params.checked()
        self.precision = _Precision.for_device(device)
        self._prepare()

    def _prepare(self) -> None:
        from diffusers import DDPMScheduler
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        pipe, precision = self.pipe, self.precision
        for part in (pipe.vae, pipe.text_encoder, pipe.unet):
            part.requires_grad_(False)
            part.to(precision.device, dtype=precision.weight_dtype)
        pipe.vae.eval()
        pipe.text_encoder.eval()
        config = LoraConfig(
            r=self.params.rank,
            lora_alpha=self.params.rank,
            init_lora_weights="gaussian",
            target_modules=list(TARGET_MODULES),
        )
        pipe.unet.add_adapter(config)
        self.lora_config = config
        cast_training_params(pipe.unet, dtype=torch.float32)  # trainable weights in fp32 under mixed precision
        if precision.device.type == "cuda":
            pipe.unet.enable_gradient_checkpointing()
        pipe.unet.train()
        self.trainable = [p for p in pipe.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=self.params.lr, weight_decay=1e-2, eps=1e-8)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise TrainingRequestError(f"Unknown prediction type {self.prediction_type!r} in the scheduler config.")

    def _encode_captions(self, captions: Sequence[str | None]) -> torch.Tensor:
        tokenizer = self.pipe.tokenizer
        ids = tokenizer(
            [c or "" for c in captions],
            max_length=tokenizer.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.precision.device)
        with torch.no_grad():
            return self.pipe.text_encoder(ids, return_dict=False)[0]

    def _batches(self, count: int, generator: torch.Generator) -> Iterator[list[int]]:
        """Indices of each step's batch: the examples in a seeded random order, epoch after epoch."""
        size = self.params.batch_size
        while True:
            order = torch.randperm(count, generator=generator).tolist()
            for start in range(0, count - size + 1 if count >= size else 1, size):
                yield order[start : start + size]

    def step(self, pixels: torch.Tensor, hidden: torch.Tensor, generator: torch.Generator) -> float:
        """One optimisation step on a batch of images (pixels in [-1, 1]) and caption embeddings; the loss."""
        pipe, precision, sched = self.pipe, self.precision, self.noise_scheduler
        with torch.no_grad():
            pixels = pixels.to(precision.device, dtype=precision.weight_dtype)
            latents = pipe.vae.encode(pixels).latent_dist.sample(generator=generator)
            latents = latents * pipe.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(precision.device)
        steps = sched.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator).to(precision.device).long()
        noisy = sched.add_noise(latents, noise, timesteps)
        target = noise if self.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)
        with precision.autocast():
            prediction = pipe.unet(noisy, timesteps, hidden, return_dict=False)[0]
        loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
        self.optimizer.zero_grad(set_to_none=True)
        if precision.scaler is not None:
            precision.scaler.scale(loss).backward()
            precision.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            precision.scaler.step(self.optimizer)
            precision.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
            self.optimizer.step()
        value = float(loss.detach().item())
        if not np.isfinite(value):
            raise ProvenanceError(f"the loss is {value}: lower the learning rate")
        return value

    def train(
        self,
        examples: Sequence[Example],
        *,
        on_step: StepCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[float]:
        """Run ``params.steps`` steps; ``should_cancel`` is asked before each (``TrainingCancelled``)."""
        if not examples:
            raise TrainingRequestError("The dataset has no images to train on.")
        params = self.params
        torch.manual_seed(params.seed)
        generator = torch.Generator().manual_seed(params.seed)
        pixels = [preprocess(example.rgb, params.resolution) for example in examples]
        captions = [example.caption for example in examples]
        losses: list[float] = []
        batches = self._batches(len(examples), generator)
        for step in range(1, params.steps + 1):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled(f"training cancelled before step {step} of {params.steps}")
            batch = next(batches)
            hidden = self._encode_captions([captions[i] for i in batch])
            losses.append(self.step(torch.stack([pixels[i] for i in batch]), hidden, generator))
            if on_step is not None:
                on_step(step, params.steps, losses[-1])
        self.pipe.unet.eval()
        return losses

    def metadata(self, lineage: Lineage) -> dict[str, str]:
        """The ``provenance.*`` metadata of the file (every value a string, as safetensors requires)."""
        params = {
            **self.params.to_dict(),
            "lora_alpha": self.lora_config.lora_alpha,
            "target_modules": list(TARGET_MODULES),
            "prediction_type": self.prediction_type,
            "precision": self.precision.name,
            "device": self.precision.device.type,
        }
        return {
            META_PREFIX + "base_model_digest": lineage.base_model_digest,
            META_PREFIX + "dataset_id": lineage.dataset_id,
            META_PREFIX + "dataset_root": lineage.dataset_root,
            META_PREFIX + "params": json.dumps(params, sort_keys=True),
            META_PREFIX + "versions": json.dumps(library_versions(), sort_keys=True),
            META_PREFIX + "training_id": lineage.training_id,
        }

    def save(self, target: Path, lineage: Lineage, losses: Sequence[float]) -> TrainingResult:
        """Write the LoRA (diffusers format, lineage metadata) and its loss curve; both appear at once or not at all."""
        metadata = self.metadata(lineage)
        target.parent.mkdir(parents=True, exist_ok=True)
        curve = loss_file(target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".training-") as tmp:
            staged = write_lora(self.pipe, Path(tmp), metadata, self.lora_config.to_dict())
            staged_curve = Path(tmp) / "loss.csv"
            staged_curve.write_text(loss_csv(losses))
            for path in (target, curve):
                if path.exists():
                    raise TrainingRequestError(f"{path} appeared while training; not overwritten.")
            os.replace(staged_curve, curve)
            os.replace(staged, target)
        return TrainingResult(target, curve, list(losses), metadata)


def write_lora(pipe: Any, folder: Path, metadata: dict[str, str], lora_config: dict[str, Any]) -> Path:
    """Save the UNet's LoRA with ``save_lora_weights`` into ``folder``, then add the lineage to its metadata."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import save_file

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora_config.items()}
    type(pipe).save_lora_weights(folder / "saved", unet_lora_layers=layers, unet_lora_adapter_metadata=config)
    saved = folder / "saved" / LORA_FILE
    with safe_open(str(saved), framework="pt") as fh:
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
        merged = {**(fh.metadata() or {}), **metadata}
    out = folder / "lora.safetensors"
    save_file(tensors, str(out), metadata=merged)
    return out


def loss_csv(losses: Sequence[float]) -> str:
    """The loss curve as CSV: ``step,loss`` per step."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "loss"])
    writer.writerows((i, f"{loss:.6f}") for i, loss in enumerate(losses, start=1))
    return buffer.getvalue()


def read_lineage(path: Path) -> dict[str, Any]:
    """The ``provenance.*`` metadata of a LoRA file, JSON values decoded ({} when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key.startswith(META_PREFIX):
            name = key.removeprefix(META_PREFIX)
            out[name] = json.loads(value) if name in ("params", "versions") else value
    return out


def train_lora(
    pipe: Any,
    examples: Sequence[Example],
    params: TrainingParams,
    out: Path,
    lineage: Lineage,
    *,
    device: str = "cpu",
    on_step: StepCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train a LoRA on ``examples`` and write it to ``out`` (a ``.safetensors`` path or a folder).

    ``out`` is checked first (an existing file is never overwritten); nothing is written unless every step ran.
    """
    import time

    target = check_output(out)
    started = time.perf_counter()
    trainer = LoraTrainer(pipe, params, device=device)
    losses = trainer.train(examples, on_step=on_step, should_cancel=should_cancel)
    result = trainer.save(target, lineage, losses)
    result.seconds = time.perf_counter() - started
    return result
