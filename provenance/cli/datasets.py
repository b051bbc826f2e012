"""``provenance datasets``: register a folder of images as a dataset, verify a folder against it, prove membership."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provenance.cli.common import DataDir, open_services, parse_creator, settings_for
from provenance.cli.render import console, fail, print_json, say
from provenance.cli.text import plain
from provenance.errors import InputError, NotFoundError, ProvenanceError

if TYPE_CHECKING:
    from provenance.lineage.datasets import DatasetService
    from provenance.runtime.services import Services

datasets_app = typer.Typer(help="Datasets: checksums, a Merkle root on chain, membership proofs.", no_args_is_help=True)
"""The ``datasets`` command group."""

DatasetId = Annotated[str, typer.Option("--dataset", help="The dataset's id (from `datasets register`).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def dataset_service(services: Services) -> DatasetService:
    """The dataset service over the opened services' database, store, signing keys and chain."""
    from provenance.lineage.datasets import DatasetService

    return DatasetService(services.sessions, services.store, services.keys, services.chain.registry)


def _hygiene_lines(hygiene: dict[str, Any]) -> list[str]:
    lines = [f"exact duplicates: {', '.join(g)}" for g in hygiene["exact_duplicates"]]
    lines += [f"near duplicates (distance {n['distance']}): {n['a']}, {n['b']}" for n in hygiene["near_duplicates"]]
    lines += [f"under 512x512: {s['path']} ({s['width']}x{s['height']})" for s in hygiene["small_images"]]
    lines += [f"not an image, left out: {n['path']} ({n['reason']})" for n in hygiene["not_images"]]
    return lines


def register(
    folder: Annotated[Path, typer.Argument(help="Folder of images (and captions.jsonl).")],
    name: Annotated[str | None, typer.Option(help="Dataset name (default: the folder's name).")] = None,
    captions: Annotated[
        Path | None, typer.Option(help='captions.jsonl: {"file", "caption", "license"?, "source"?} per line.')
    ] = None,
    license: Annotated[str | None, typer.Option("--license", help="SPDX licence id of the whole dataset.")] = None,
    creator: Annotated[
        list[str] | None, typer.Option("--creator", help="ADDRESS:BPS[:NAME], a royalty share (repeatable).")
    ] = None,
    pin: Annotated[bool, typer.Option("--pin", help="Also store metadata-stripped copies of the images.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait until the root is registered on chain.")] = True,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Hash every image and caption, sign the manifest, store it, and register the Merkle root on chain."""
    from provenance.db.models import Dataset
    from provenance.lineage.anchoring import wait_registered

    if not folder.is_dir():
        fail(f"not a folder: {folder}")
    creators = [parse_creator(c) for c in creator or []]
    settings = settings_for(data_dir)
    services = open_services(settings)
    try:
        datasets = dataset_service(services)
        result = datasets.register_folder(
            folder, name=name, captions=captions, license=license, creators=creators, pin=pin,
            account_id=services.admin_account_id,
        )  # fmt: skip
        dataset_id = result.dataset.id
        status = result.dataset.status
        if wait:
            status = wait_registered(
                services.anchorer, services.writing.lease, lambda: datasets.get(dataset_id).status,
                timeout_s=settings.tx_timeout_s, say=say,
            )  # fmt: skip
        dataset: Dataset = datasets.get(dataset_id)
    except (InputError, NotFoundError) as exc:
        fail(exc.detail)
    except ProvenanceError as exc:
        say(f"error: {exc.detail}")
        raise typer.Exit(1) from None
    finally:
        services.close()
    out: dict[str, Any] = {
        "dataset_id": dataset.id, "name": dataset.name, "root": dataset.root, "items": dataset.item_count,
        "manifest_cid": dataset.manifest_cid, "status": status, "tx_hash": dataset.tx_hash,
        "block_number": dataset.block_number, "hygiene": result.hygiene.as_dict(),
    }  # fmt: skip
    if as_json:
        print_json(out)
    else:
        for line in _hygiene_lines(out["hygiene"]):
            say(f"warning: {line}")
        if pin:
            stripped = result.hygiene.exif_stripped
            say(f"stored {dataset.item_count} copies with metadata stripped ({stripped} originals carried some)")
        console.print(
            f"[green]dataset[/green] {plain(dataset.id)}  {dataset.item_count} items  root {dataset.root}  "
            f"manifest {plain(dataset.manifest_cid)}  {status}"
            + (f" in block {dataset.block_number}" if dataset.block_number is not None else ""),
            highlight=False,
            soft_wrap=True,
        )
    if wait and status != "registered":
        raise typer.Exit(1)


def verify(
    folder: Annotated[Path, typer.Argument(help="Folder to compare with the registered dataset.")],
    dataset: DatasetId,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Re-hash the folder: exit 0 only when it is identical to the dataset, 1 when files differ."""
    services = open_services(settings_for(data_dir), signing=False)
    try:
        diff = dataset_service(services).verify_folder(dataset, folder)
    except (InputError, NotFoundError) as exc:
        fail(exc.detail)
    finally:
        services.close()
    if as_json:
        print_json({"identical": diff.identical, "added": diff.added, "removed": diff.removed, "changed": diff.changed})
    else:
        for word, paths in (("added", diff.added), ("removed", diff.removed), ("changed", diff.changed)):
            for path in paths:
                console.print(f"{word:8} {plain(path)}", markup=False, highlight=False)
        console.print("identical" if diff.identical else "different", markup=False, highlight=False)
    if not diff.identical:
        raise typer.Exit(1)


def prove(
    file: Annotated[Path, typer.Argument(help="The image to look for.")],
    dataset: DatasetId,
    near: Annotated[
        bool, typer.Option("--near", help="If not a member, look for near-duplicates by fingerprint.")
    ] = False,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """The Merkle proof of an image in a dataset, checked against the root on chain (exit 1 when not a member)."""
    if not file.is_file():
        fail(f"no such file: {file}")
    data = file.read_bytes()
    services = open_services(settings_for(data_dir), signing=False)
    try:
        datasets = dataset_service(services)
        proof = datasets.prove(dataset, hashlib.sha256(data).hexdigest())
        matches = datasets.near(dataset, data) if proof is None and near else []
    except (InputError, NotFoundError) as exc:
        fail(exc.detail)
    finally:
        services.close()
    out: dict[str, Any] = {"member": proof is not None, "proof": proof.as_dict() if proof else None}
    if near:
        out["near"] = [{"path": m.path, "sha256": m.sha256, "distance": m.distance} for m in matches]
    if as_json:
        print_json(out)
    elif proof is not None:
        check = "checks against the root on chain" if proof.valid else "does NOT check against the root on chain"
        console.print(f"member: {plain(proof.path)}  proof of {len(proof.proof)} hashes {check}", markup=False)
        console.print(f"root {proof.root}  block {proof.block_number}", markup=False)
    else:
        console.print("not a member: no proof", markup=False)
        for m in matches:
            console.print(
                f"near match (not a proof): {plain(m.path)} at fingerprint distance {m.distance}/64", markup=False
            )
    if proof is None or not proof.valid:
        raise typer.Exit(1)


for _command in (register, verify, prove):
    datasets_app.command()(_command)
