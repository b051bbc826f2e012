"""``provenance models``: register a model or LoRA (hash, sign with model-signing, register on chain), verify, list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from provenance.cli.common import DataDir, open_services, parse_creator, settings_for
from provenance.cli.render import console, fail, print_json, say
from provenance.cli.text import plain
from provenance.errors import InputError, NotFoundError, ProvenanceError

models_app = typer.Typer(help="Signed, registered models (base checkpoints and LoRAs).", no_args_is_help=True)
"""The ``models`` command group."""

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def model_out(row: Any) -> dict[str, Any]:
    """A registered model as JSON (the CLI's ``--json`` and the API's body share these fields)."""
    return {
        "model_id": row.id,
        "name": row.name,
        "kind": row.kind,
        "digest": row.digest,
        "files": row.files,
        "signature_cid": row.signature_cid,
        "architecture": row.architecture,
        "base_model_id": row.base_model_id,
        "dataset_id": row.dataset_id,
        "training_id": row.training_id,
        "creators": row.creators,
        "status": row.status,
        "registry_key": row.registry_key,
        "tx_hash": row.tx_hash,
        "block_number": row.block_number,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


@models_app.command("register")
def register(
    path: Annotated[Path, typer.Argument(help="A diffusers folder, or one checkpoint or LoRA file.")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the file or folder name).")] = None,
    kind: Annotated[str, typer.Option(help="base or lora.")] = "base",
    creator: Annotated[
        list[str] | None, typer.Option("--creator", help="ADDRESS:BPS[:NAME], a royalty share (repeatable).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the digest is registered on chain.")] = True,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Hash every file, sign with model-signing (the service's key), store the signature, register on chain."""
    from provenance.lineage.anchoring import wait_registered
    from provenance.lineage.models import MODEL_KINDS, check_model_path

    if kind not in MODEL_KINDS:
        fail(f"--kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}")
    try:
        check_model_path(path)  # before any service starts
    except InputError as exc:
        fail(exc.detail)
    creators = [parse_creator(c) for c in creator or []]
    settings = settings_for(data_dir)
    services = open_services(settings, signing=False)
    try:
        models = services.models
        row = models.register(
            path, name=name or path.name, kind=kind, creators=creators, account_id=services.admin_account_id
        )
        status = row.status
        if wait and status != "registered":
            status = wait_registered(
                services.anchorer, services.writing.lease, lambda: models.get(row.id).status,
                timeout_s=settings.tx_timeout_s, say=say,
            )  # fmt: skip
        row = models.get(row.id)
    except (InputError, NotFoundError) as exc:
        fail(exc.detail)
    except ProvenanceError as exc:
        say(f"error: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        services.close()
    if as_json:
        print_json(model_out(row))
    else:
        console.print(
            f"[green]model[/green] {plain(row.id)}  {plain(row.name)} ({row.kind}, {len(row.files)} files)  "
            f"digest {row.digest}  signature {plain(row.signature_cid or '-')}  {status}"
            + (f" in block {row.block_number}" if row.block_number is not None else ""),
            highlight=False,
            soft_wrap=True,
        )
    if wait and status != "registered":
        raise typer.Exit(1)


@models_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="The model folder or file to check.")],
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Check the signature (model-signing), the registration on chain and the files. Exit 0 only if all hold."""
    from provenance.lineage.models import check_model_path

    try:
        check_model_path(path)
    except InputError as exc:
        fail(exc.detail)
    services = open_services(settings_for(data_dir), signing=False)
    try:
        result = services.models.verify(path)
    except InputError as exc:
        fail(exc.detail)
    finally:
        services.close()
    if as_json:
        print_json(result.to_dict())
    else:
        _print_verification(result)
    raise typer.Exit(0 if result.ok else 1)


def _print_verification(result: Any) -> None:
    """The verification as a few lines of text."""

    def mark(ok: bool) -> str:
        return "[green]ok[/green]" if ok else "[red]FAILED[/red]"

    who = "no registered model"
    if result.model_id:
        who = f"{plain(result.name)} ({result.kind}, {plain(result.model_id)})"
    console.print(f"model: {who}  digest {result.digest}", highlight=False, soft_wrap=True)
    console.print(
        f"signature: {mark(result.signature_valid)}  {plain(result.signature_detail)}", highlight=False, soft_wrap=True
    )
    console.print(f"on chain: {mark(result.registered)}  {plain(result.chain_detail)}", highlight=False, soft_wrap=True)
    if result.changed:
        console.print(f"changed files: {plain(', '.join(result.changed))}", highlight=False, soft_wrap=True)
    console.print("[green]verified[/green]" if result.ok else "[red]not verified[/red]", highlight=False)


@models_app.command("list")
def list_models(
    kind: Annotated[str | None, typer.Option(help="Only base models or only LoRAs.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """The registered models, newest first."""
    services = open_services(settings_for(data_dir), start_worker=False, signing=False)
    try:
        rows = services.models.list(kind=kind)
    finally:
        services.close()
    if as_json:
        print_json([model_out(r) for r in rows])
        return
    for row in rows:
        console.print(
            f"{plain(row.id)}  {plain(row.name)}  {row.kind}  {row.digest[:16]}…  {row.status}",
            highlight=False,
            soft_wrap=True,
        )
