"""``provenance certify``: certify image files and write the certified copies next to them (or to ``--out``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from provenance.cli.common import DataDir, open_services, settings_for, wait_registered
from provenance.cli.render import console, err, fail, print_json
from provenance.cli.text import clean, plain
from provenance.errors import ProvenanceError

if TYPE_CHECKING:
    from provenance.runtime.services import Services

_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def certify(
    files: Annotated[list[Path], typer.Argument(help="Images to certify (PNG, JPEG, WebP).")],
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the certified copies (default: next to each file).")
    ] = None,
    source_type: Annotated[
        str | None,
        typer.Option(
            help="What the images are, as an IPTC digital source type (digitalCapture, trainedAlgorithmicMedia, "
            "compositeWithTrainedAlgorithmicMedia, algorithmicMedia, ...). Without it no source type is claimed."
        ),
    ] = None,
    derived_from: Annotated[
        str | None,
        typer.Option(help="Declare the images derivatives of this record (needed for another account's content)."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until the records are registered on chain.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per file.")] = False,
) -> None:
    """Certify images and write the certified copies (``NAME.certified.EXT``)."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        fail(f"no such file: {', '.join(missing)}")
    settings = settings_for(data_dir)
    services = open_services(settings)
    results: list[dict[str, Any]] = []
    failures = 0
    try:
        results, failures = _certify_files(services, files, out, source_type, derived_from, progress=not as_json)
        if results:
            statuses = wait_registered(services, [r["record_id"] for r in results], settings.tx_timeout_s, wait=wait)
            if wait and any(s != "registered" for s in statuses.values()):
                failures += 1  # exit code 1: not every record made it onto the chain
            for r in results:
                record = services.repository.get(r["record_id"])
                assert record is not None, r["record_id"]  # certified above
                r.update(status=statuses[r["record_id"]], tx_hash=record.tx_hash, block_number=record.block_number)
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    for r in results:
        if as_json:
            print_json(r)
        else:
            console.print(
                f"[green]certified[/green] {plain(r['file'])} -> {plain(r['certified'])}  record "
                f"{plain(r['record_id'])}  {plain(r.get('status', 'pending'))}",
                highlight=False,
                soft_wrap=True,
            )
    if failures:
        raise typer.Exit(1)


def _certify_files(
    services: Services,
    files: list[Path],
    out: Path | None,
    source_type: str | None,
    derived_from: str | None,
    *,
    progress: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Certify each file and write its copy: one result per certified file, and the number refused.

    A file the certifier refuses is one ``error:`` line on stderr, then the next file.
    """
    from provenance.certify.certifier import CertifyOptions

    results: list[dict[str, Any]] = []
    failures = 0
    with Progress(
        TextColumn("[bold]certify"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),  # a file name, not markup
        console=err,
        disable=not progress or len(files) < 2,
    ) as bar:
        task = bar.add_task("", total=len(files))
        for path in files:
            bar.update(task, description=clean(path.name))
            try:
                certified = services.certifier.certify(
                    path.read_bytes(),
                    # The CLI acts in-process as the admin account (the one behind <data_dir>/admin.key).
                    CertifyOptions(
                        source_type=source_type,
                        derived_from=derived_from,
                        filename=path.name,
                        account_id=services.admin_account_id,
                    ),
                )
            except ProvenanceError as exc:
                failures += 1
                err.print(f"[red]error:[/red] {plain(path)}: {plain(exc.detail)}", highlight=False)
                bar.advance(task)
                continue
            target_dir = out or path.parent
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / f"{path.stem}.certified{_SUFFIXES[certified.record.media_type]}"
            target.write_bytes(certified.data)
            results.append(
                {
                    "file": str(path),
                    "certified": str(target),
                    "record_id": certified.record.id,
                    "sha256": certified.record.sha256,
                    "cid": certified.record.cid,
                    "watermark_id": certified.record.watermark_id,
                }
            )
            bar.advance(task)
    return results, failures
