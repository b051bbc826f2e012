"""``provenance train lora``: train a LoRA on a registered dataset, here, with a progress bar; register it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import console, err, fail, print_json, say

train_app = typer.Typer(help="Train LoRAs that record where they came from.", no_args_is_help=True)


@train_app.command("lora")
def lora(
    dataset: Annotated[str, typer.Option("--dataset", help="Id of the registered dataset to train on.")],
    base: Annotated[str | None, typer.Option("--base", help="Base model: name, folder or checkpoint.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .safetensors file (or a folder for it).")] = Path(
        "lora.safetensors"
    ),
    data: Annotated[
        Path | None, typer.Option("--data", help="The dataset's folder (needed unless it was registered with --pin).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of the registered LoRA.")] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 500,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-4,
    resolution: Annotated[int, typer.Option(help="Training resolution (square), a multiple of 8.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed of the data order, noise and timesteps.")] = 0,
    wait: Annotated[bool, typer.Option(help="Wait until the LoRA's digest is registered on chain.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished run as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune the base model's UNet with LoRA adapters on the dataset (its files re-verified first), write the
    LoRA with its lineage in the metadata and the loss curve beside it, and register it as a signed model."""
    from provenance.lineage.training import TrainingParams
    from provenance.lineage.training_jobs import TrainingSpec
    from provenance.runtime.trainings import training_service

    params = TrainingParams(rank=rank, steps=steps, lr=lr, resolution=resolution, seed=seed).checked()  # before a start
    settings = settings_for(data_dir)
    services = open_services(settings)
    try:
        service = training_service(services)
        spec = TrainingSpec(dataset, base or settings.default_model, params, name=name, data=data, output=out)
        run = service.create(spec, account_id=services.admin_account_id)
        with Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(), console=err,
        ) as progress:  # fmt: skip
            task = progress.add_task("", total=params.steps, loss="-")
            run = service.run(
                run.id, on_step=lambda step, total, loss: progress.update(task, completed=step, loss=f"{loss:.4f}")
            )
        if run.status != "succeeded":
            fail(run.error or run.status)
        status = service.models.get(str(run.model_id)).status
        if wait and status != "registered":
            from provenance.lineage.anchoring import wait_registered

            model_id = str(run.model_id)
            status = wait_registered(
                services.anchorer, services.writing.lease, lambda: service.models.get(model_id).status,
                timeout_s=settings.tx_timeout_s, say=say,
            )  # fmt: skip
        if as_json:
            print_json({c.name: getattr(run, c.name) for c in run.__table__.columns})
            return
        lines = [
            f"LoRA      {run.output_path}",
            f"loss      {run.params.get('loss_path')} (last {run.loss:.4f})",
            f"model id  {run.model_id} (signed; on chain: {status})",
            f"training  {run.id}",
        ]
        console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
        if wait and status != "registered":
            raise typer.Exit(1)  # trained and signed, but not (yet) on chain
    finally:
        services.close()
