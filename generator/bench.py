"""``make bench-gen``: images per second, generate-only versus generate-and-certify.

Same pipeline, same seeds. Three runs per batch size:

- ``diffusers``: a plain diffusers call with default settings (fp32, as loaded), the baseline;
- ``generate``: the provenance ``Generator`` (fp16, SDPA, channels-last, optional torch.compile on CUDA);
- ``generate+certify``: the same, with every image watermarked, C2PA-signed, hashed, signed,
  pinned and recorded on a certification thread that overlaps the next batch's diffusion.

``--arch tiny`` (default, CPU-friendly) uses the built-in tiny pipeline; ``--arch sd15`` and
``--arch sdxl`` build the real architectures at full size from their published configs with
random weights (for GPUs). Targets on a GPU: certification adds at most 5% per image, and the
generator is at least 1.5x faster than the plain diffusers call.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import torch

from generator.models import ModelCatalog
from generator.pipeline import GenerationRequest, Generator, default_device


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_pipe(arch: str, device: str, dtype: torch.dtype, models_dir: Path):  # type: ignore[no-untyped-def]
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if arch == "tiny":
        from diffusers import StableDiffusionPipeline

        from generator.tiny import ensure_tiny_model

        return StableDiffusionPipeline.from_pretrained(ensure_tiny_model(models_dir / "tiny-random"), dtype=dtype)
    from generator.architectures import build

    return build(arch, device, dtype)


def plain_diffusers(pipe, request: GenerationRequest, batches: int, device: str) -> float:  # type: ignore[no-untyped-def]
    """Images per second of a default diffusers call."""
    pipe.set_progress_bar_config(disable=True)

    def once(seed: int) -> None:
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(request.num_images)]
        pipe(
            [request.prompt] * request.num_images,
            num_inference_steps=request.steps,
            width=request.width,
            height=request.height,
            guidance_scale=request.guidance_scale,
            generator=generators,
        )

    once(10_000)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for b in range(batches):
        once(b * request.num_images)
    _sync(device)
    return batches * request.num_images / (time.perf_counter() - start)


def run(
    arch: str, size: int, steps: int, batch_sizes: list[int], batches: int, compile_unet: bool, baseline: bool
) -> None:
    from provenance.certify.certifier import CertifyOptions
    from provenance.config import Settings
    from provenance.jobs.runner import png_bytes
    from provenance.runtime.services import Services

    device = default_device()
    with tempfile.TemporaryDirectory(prefix="provenance-bench-gen-") as tmp:
        models_dir = Path(tmp) / "models"
        generator = Generator(ModelCatalog(models_dir), device=device, compile_unet=compile_unet)
        generator.register(
            arch, build_pipe(arch, device, generator.dtype, models_dir), label=f"{arch} (random weights)"
        )
        services = Services.open(Settings(data_dir=Path(tmp) / "data"), start_worker=False)
        name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
        print(f"device: {name}; arch {arch}; {size}x{size}; {steps} steps; {generator.dtype}; compile {compile_unet}")
        header = ("batch", "diffusers img/s", "generate img/s", "gen+certify img/s", "overhead", "speedup")
        widths = (5, 16, 15, 18, 9, 8)
        print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
        try:
            for batch in batch_sizes:
                request = GenerationRequest(
                    "a lighthouse on a cliff at dawn",
                    steps=steps,
                    width=size,
                    height=size,
                    num_images=batch,
                    model=arch,
                )
                generator.generate(GenerationRequest(**{**request.__dict__, "seed": 99}))  # warm-up, compile
                _sync(device)
                start = time.perf_counter()
                for b in range(batches):
                    generator.generate(GenerationRequest(**{**request.__dict__, "seed": b * batch}))
                _sync(device)
                gen_rate = batches * batch / (time.perf_counter() - start)

                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="certify") as pool:
                    futures = []
                    start = time.perf_counter()
                    for b in range(batches):
                        images = generator.generate(GenerationRequest(**{**request.__dict__, "seed": b * batch}))
                        futures += [
                            pool.submit(
                                services.certifier.certify, png_bytes(img), CertifyOptions(generation=img.provenance)
                            )
                            for img in images
                        ]
                    wait(futures)
                    elapsed = time.perf_counter() - start
                for future in futures:
                    future.result()
                both_rate = batches * batch / elapsed
                overhead = (gen_rate / both_rate - 1) * 100
                if baseline:
                    plain = build_pipe(arch, device, torch.float32, models_dir).to(device)
                    base_rate = plain_diffusers(plain, request, batches, device)
                    del plain
                    speedup = f"{gen_rate / base_rate:7.2f}x"
                    base = f"{base_rate:16.2f}"
                else:
                    base, speedup = f"{'-':>16}", f"{'-':>8}"
                print(f"{batch:>5} {base} {gen_rate:15.2f} {both_rate:18.2f} {overhead:8.1f}% {speedup}")
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Generation throughput with and without certification.")
    parser.add_argument("--arch", choices=["tiny", "sd15", "sdxl"], default="tiny")
    parser.add_argument("--size", type=int, default=None, help="default: 256 tiny, 512 sd15, 1024 sdxl")
    parser.add_argument("--steps", type=int, default=None, help="default: 8 tiny, 25 sd15, 30 sdxl")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batches", type=int, default=3, help="timed batches per batch size")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain diffusers baseline")
    args = parser.parse_args()
    size = args.size or {"tiny": 256, "sd15": 512, "sdxl": 1024}[args.arch]
    steps = args.steps or {"tiny": 8, "sd15": 25, "sdxl": 30}[args.arch]
    run(args.arch, size, steps, args.batch, args.batches, args.compile, not args.no_baseline)


if __name__ == "__main__":
    main()
