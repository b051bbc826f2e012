"""``provenance generate`` and ``provenance reproduce``: generate certified images, and generate a record again."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from generator.request import GenerationRequest, GenerationSpec
from provenance.cli.common import DataDir, open_services, settings_for, wait_registered
from provenance.cli.render import console, err, fail, print_json
from provenance.cli.text import clean, plain
from provenance.errors import ProvenanceError

if TYPE_CHECKING:
    from provenance.db.models import Record
    from provenance.runtime.services import Services


def _default(name: str) -> Any:
    """The default of a ``GenerationSpec`` field: the options show the request's defaults, written once there."""
    return GenerationSpec.model_fields[name].default


def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    data_dir: DataDir = None,
    num_images: Annotated[int, typer.Option("-n", "--num-images", help="Images to generate (1-8).")] = _default(
        "num_images"
    ),
    seed: Annotated[int | None, typer.Option(help="Seed of the first image (image i uses seed + i).")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = _default("steps"),
    guidance_scale: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")] = _default(
        "guidance_scale"
    ),
    width: Annotated[int, typer.Option(help="Width, a multiple of 8.")] = _default("width"),
    height: Annotated[int, typer.Option(help="Height, a multiple of 8.")] = _default("height"),
    negative_prompt: Annotated[str | None, typer.Option(help="What not to draw.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name, diffusers folder or .safetensors checkpoint.")] = None,
    lora: Annotated[list[str] | None, typer.Option(help="LoRA file, optionally PATH:WEIGHT; repeatable.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="euler, euler_a, ddim, dpmpp_2m, unipc, ...")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the certified images.")] = Path("."),
    wait: Annotated[bool, typer.Option(help="Wait until the records are registered on chain.")] = True,
) -> None:
    """Generate images with diffusers and certify every one of them."""
    spec = _spec(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        width=width,
        height=height,
        num_images=num_images,
        model=model,
        loras=_parse_loras(lora or []),
        scheduler=scheduler,
    )
    settings = settings_for(data_dir)
    services = open_services(settings)
    try:
        # The operator's own command line may name any local file.
        request = services.jobs.prepare(spec, trusted=True)
        written = _write_images(services, _run_job(services, request), out)
        statuses = wait_registered(services, [r.id for _, r in written], settings.tx_timeout_s, wait=wait)
        for target, record in written:
            record = _record(services, record.id)
            console.print(
                f"[green]generated[/green] {plain(target)}  record {plain(record.id)}  "
                f"seed {plain((record.generation or {})['seed'])}  {plain(record.status)}",
                highlight=False,
                soft_wrap=True,
            )
        if wait and any(status != "registered" for status in statuses.values()):
            raise typer.Exit(1)  # certified, but not every record made it onto the chain
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()


def _spec(**options: Any) -> GenerationSpec:
    """The command line's options as the one generation request shape; a value out of bounds is exit code 2."""
    from provenance.jobs.service import as_spec  # the job service loads the certifier: only when a command runs

    try:
        return as_spec(options)
    except ProvenanceError as exc:
        fail(exc.detail)


def _parse_loras(items: list[str]) -> list[dict[str, Any]]:
    """``PATH`` or ``PATH:WEIGHT`` per ``--lora`` (weight 1.0 when not given); a bad weight is exit code 2."""
    loras = []
    for item in items:
        path, _, weight = item.partition(":")
        try:
            loras.append({"path": path, "weight": float(weight) if weight else 1.0})
        except ValueError:
            fail(f"bad LoRA weight in {item!r}: use PATH:WEIGHT")
    return loras


def _run_job(services: Services, request: GenerationRequest) -> list[str]:
    """Run one generation job here, with a progress bar on stderr; the ids of the records it certified."""
    job = services.jobs.jobs.create(request, "cli", account_id=services.admin_account_id)
    with Progress(
        TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task("", total=request.steps)
        services.jobs.runner.run(job.id, on_step=lambda step, total: progress.update(task, completed=step, total=total))
    finished = services.jobs.get(job.id)
    if finished.status != "succeeded":
        fail(finished.error or finished.status)
    return list(finished.record_ids)


def _write_images(services: Services, record_ids: list[str], out: Path) -> list[tuple[Path, Record]]:
    """Write each record's certified image to ``out/RECORD_ID.png``."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, Record]] = []
    for record_id in record_ids:
        record = _record(services, record_id)
        target = out / f"{record.id}.png"
        target.write_bytes(services.store.cat(record.cid))
        written.append((target, record))
    return written


def _record(services: Services, record_id: str) -> Record:
    """A record the job has just certified (so it exists)."""
    record = services.repository.get(record_id)
    assert record is not None, record_id
    return record


def reproduce(
    record_id: Annotated[str, typer.Argument(help="Record of a generated image.")],
    data_dir: DataDir = None,
    prompt: Annotated[str | None, typer.Option(help="The prompt, when only its SHA-256 was recorded.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Generate a recorded image again and compare the pixels with the certified file."""
    from provenance.jobs.reproduce import reproduce as run_reproduce

    services = open_services(settings_for(data_dir))
    try:
        report = run_reproduce(services.reproduction, record_id, prompt=prompt)
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    if as_json:
        print_json(report.as_dict())
        return
    if report.pixels_match:
        console.print(f"[green]pixels match[/green]: record {plain(record_id)} reproduces bit for bit", highlight=False)
    else:
        console.print(
            f"[yellow]pixels differ[/yellow]: PSNR {report.psnr_db:.2f} dB"
            if report.psnr_db is not None
            else "[yellow]pixels differ[/yellow]: sizes differ",
            highlight=False,
        )
    console.print(
        f"weights match: {report.weights_match}; library versions match: {report.versions_match}", highlight=False
    )
    for note in report.notes:
        console.print(f"note: {clean(note)}", markup=False, highlight=False, soft_wrap=True)
