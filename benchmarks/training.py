"""LoRA training speed: ``make bench-training``.

Trains the LoRA recipe of ``provenance/lineage/training.py`` (frozen VAE and text encoder, PEFT LoRA on the
UNet's attention projections, AdamW) on synthetic captioned images and reports optimisation steps per second,
after ``--warmup`` steps that are not counted. On the CPU it runs the tiny random-weight pipeline at several
resolutions and ranks; with ``--sd15`` (needs CUDA) the full-size Stable Diffusion 1.5 architecture with random
weights (the real compute per step, no download) at 512 px, rank 16, bf16/fp16 with gradient checkpointing.
Nothing is written to disk; the numbers go to stdout as a Markdown table (``--json PATH`` also writes them).

    python -m benchmarks.training [--steps 12] [--warmup 2] [--sd15] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from provenance.lineage.training import LoraTrainer, PlainExample, TrainingParams

CPU_CASES = [(64, 4), (128, 4), (128, 16), (256, 16)]  # (resolution, rank) on the tiny pipeline


def examples(count: int = 16, side: int = 256) -> list[PlainExample]:
    """Smooth synthetic images with captions (the content does not change the compute)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = []
    for i in range(count):
        rgb = np.stack([x * 200 + i * 3, y * 180, (x + y) * 90], axis=-1) + rng.normal(0, 10, (side, side, 3))
        out.append(PlainExample(np.clip(rgb, 0, 255).astype(np.uint8), f"synthetic picture {i}"))
    return out


def measure(pipe: Any, params: TrainingParams, device: str, warmup: int) -> dict[str, Any]:
    """Steps per second of ``params.steps`` steps after ``warmup`` uncounted ones, and the last loss."""
    trainer = LoraTrainer(pipe, TrainingParams(**{**params.to_dict(), "steps": params.steps + warmup}), device=device)
    stamps: list[float] = []

    def on_step(step: int, _steps: int, _loss: float) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    losses = trainer.train(examples(side=max(params.resolution, 64)), on_step=on_step)
    counted = stamps[max(warmup, 1) - 1 :]  # from the end of the last warm-up step (at least one)
    seconds = counted[-1] - counted[0]
    steps = len(counted) - 1
    trainable = sum(p.numel() for p in trainer.trainable)
    return {
        "device": device,
        "resolution": params.resolution,
        "rank": params.rank,
        "precision": trainer.precision.name,
        "trainable_params": trainable,
        "steps": steps,
        "steps_per_s": round(steps / seconds, 3) if seconds else None,
        "last_loss": round(losses[-1], 4),
    }


def run(steps: int, warmup: int, sd15: bool) -> list[dict[str, Any]]:
    """Every case: the tiny pipeline on the CPU, and SD 1.5 at 512 on CUDA when asked."""
    from generator.tiny import build_tiny_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for resolution, rank in CPU_CASES:
        params = TrainingParams(rank=rank, steps=steps, lr=1e-4, resolution=resolution, seed=0)
        rows.append({"model": "tiny-random", **measure(build_tiny_pipeline(), params, "cpu", warmup)})
    if sd15:
        if not torch.cuda.is_available():
            raise SystemExit("--sd15 needs a CUDA device")
        from generator.architectures import build

        pipe = build("sd15", "cuda", torch.float32)
        params = TrainingParams(rank=16, steps=steps, lr=1e-4, resolution=512, seed=0)
        rows.append({"model": "sd15 (random weights)", **measure(pipe, params, "cuda", warmup)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| model | device | precision | resolution | rank | LoRA params | steps/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['device']} | {r['precision']} | {r['resolution']} | {r['rank']} | "
            f"{r['trainable_params']:,} | {r['steps_per_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse the options, run the cases, print the table (and write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="counted steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="steps run first and not counted")
    parser.add_argument("--sd15", action="store_true", help="also SD 1.5 at 512 on CUDA")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = run(args.steps, args.warmup, args.sd15)
    print(table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
