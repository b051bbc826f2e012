"""The ``provenance`` command line: serve, certify, verify, keys, chain."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.exceptions import TyperException

from provenance import __version__
from provenance.chain.devchain import DEV_CHAIN_WARNING
from provenance.cli.apikeys import apikey_app
from provenance.cli.text import clean, json_text, plain
from provenance.config import Settings
from provenance.errors import ConfigurationError, InputError, ProvenanceError

app = typer.Typer(help="Certify AI-generated images and verify them back.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="ECDSA signing keys.", invoke_without_command=True)
chain_app = typer.Typer(help="The ProvenanceRegistry contract.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(chain_app, name="chain")
app.add_typer(apikey_app, name="apikey")
trust_app = typer.Typer(help="The trust root verifiers pin.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")
fingerprints_app = typer.Typer(help="Perceptual fingerprints of certified images.", no_args_is_help=True)
app.add_typer(fingerprints_app, name="fingerprints")
# No emoji codes: ":warning:" in a file name or a title is text, not a picture. Values the CLI did not
# write itself go through plain() (markup strings, table cells) or clean() (markup=False): see cli_text.
console = Console(emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)  # one line per error, whatever the terminal width

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./data or PROVENANCE_DATA_DIR).")
]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2. ``message`` is printed as text: it may quote file names and manifests."""
    err.print(f"[red]error:[/red] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _print_json(data: Any) -> None:
    """One JSON document on stdout, as text (no markup, no emoji, no control character)."""
    console.print(json_text(data), markup=False, highlight=False, soft_wrap=True)


def _open(settings: Settings, *, start_worker: bool = False, signing: bool = True):  # type: ignore[no-untyped-def]
    """The services a command needs; ``signing=False`` for commands that never sign a manifest."""
    from provenance.runtime.services import Services

    return Services.open(settings, start_worker=start_worker, signing=signing)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Start the HTTP API on the configured stack (embedded by default)."""
    import uvicorn

    from provenance.api.app import create_app

    settings = _settings(data_dir, host=host, port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per chain lookup is noise
    err.print(
        f"provenance {__version__}: data in {clean(settings.resolved_data_dir)}, "
        f"API on http://{clean(settings.host)}:{settings.port}/docs",
        markup=False,
        highlight=False,
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def _wait_registered(services: Any, record_ids: list[str], timeout_s: float, *, wait: bool = True) -> dict[str, str]:
    """Register the records: as the chain writer if no service is running, else leave it to the service."""
    from provenance.anchoring.anchor import register_or_hand_over

    return register_or_hand_over(
        services.anchorer,
        services.repository,
        services.writing.lease,
        record_ids,
        wait=wait,
        timeout_s=timeout_s,
        say=lambda line: err.print(clean(line), markup=False, highlight=False, soft_wrap=True),
    )


@app.command()
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
    from provenance.certify.certifier import CertifyOptions

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        _fail(f"no such file: {', '.join(missing)}")
    settings = _settings(data_dir)
    services = _open(settings)
    results: list[dict[str, Any]] = []
    failures = 0
    try:
        with Progress(
            TextColumn("[bold]certify"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False),  # a file name, not markup
            console=err,
            disable=as_json or len(files) < 2,
        ) as progress:
            task = progress.add_task("", total=len(files))
            for path in files:
                progress.update(task, description=clean(path.name))
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
                    progress.advance(task)
                    continue
                target_dir = out or path.parent
                target_dir.mkdir(parents=True, exist_ok=True)
                suffix = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}[certified.record.media_type]
                target = target_dir / f"{path.stem}.certified{suffix}"
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
                progress.advance(task)
        if results:
            statuses = _wait_registered(services, [r["record_id"] for r in results], settings.tx_timeout_s, wait=wait)
            if wait and any(s != "registered" for s in statuses.values()):
                failures += 1  # exit code 1: not every record made it onto the chain
            for r in results:
                record = services.repository.get(r["record_id"])
                r.update(status=statuses[r["record_id"]], tx_hash=record.tx_hash, block_number=record.block_number)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    for r in results:
        if as_json:
            _print_json(r)
        else:
            console.print(
                f"[green]certified[/green] {plain(r['file'])} -> {plain(r['certified'])}  record "
                f"{plain(r['record_id'])}  {plain(r.get('status', 'pending'))}",
                highlight=False,
                soft_wrap=True,
            )
    if failures:
        raise typer.Exit(1)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    data_dir: DataDir = None,
    num_images: Annotated[int, typer.Option("-n", "--num-images", help="Images to generate (1-8).")] = 1,
    seed: Annotated[int | None, typer.Option(help="Seed of the first image (image i uses seed + i).")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 25,
    guidance_scale: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")] = 7.5,
    width: Annotated[int, typer.Option(help="Width, a multiple of 8.")] = 512,
    height: Annotated[int, typer.Option(help="Height, a multiple of 8.")] = 512,
    negative_prompt: Annotated[str | None, typer.Option(help="What not to draw.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name, diffusers folder or .safetensors checkpoint.")] = None,
    lora: Annotated[list[str] | None, typer.Option(help="LoRA file, optionally PATH:WEIGHT; repeatable.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="euler, euler_a, ddim, dpmpp_2m, unipc, ...")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the certified images.")] = Path("."),
    wait: Annotated[bool, typer.Option(help="Wait until the records are registered on chain.")] = True,
) -> None:
    """Generate images with diffusers and certify every one of them."""
    loras = []
    for item in lora or []:
        path, _, weight = item.partition(":")
        try:
            loras.append({"path": path, "weight": float(weight) if weight else 1.0})
        except ValueError:
            _fail(f"bad LoRA weight in {item!r}: use PATH:WEIGHT")
    settings = _settings(data_dir)
    services = _open(settings)
    written: list[tuple[Path, Any]] = []
    try:
        request = services.jobs.prepare(
            {
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "seed": seed,
                "steps": steps,
                "guidance_scale": guidance_scale,
                "width": width,
                "height": height,
                "num_images": num_images,
                "model": model,
                "loras": loras,
                "scheduler": scheduler,
            },
            trusted=True,  # the operator's own command line may name any local file
        )
        job = services.jobs.jobs.create(request, "cli", account_id=services.admin_account_id)
        with Progress(
            TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
        ) as progress:
            task = progress.add_task("", total=steps)
            services.jobs.runner.run(
                job.id, on_step=lambda step, total: progress.update(task, completed=step, total=total)
            )
        finished = services.jobs.get(job.id)
        if finished.status != "succeeded":
            _fail(finished.error or finished.status)
        out.mkdir(parents=True, exist_ok=True)
        for record_id in finished.record_ids:
            record = services.repository.get(record_id)
            target = out / f"{record.id}.png"
            target.write_bytes(services.store.cat(record.cid))
            written.append((target, record))
        statuses = _wait_registered(services, [r.id for _, r in written], settings.tx_timeout_s, wait=wait)
        for target, record in written:
            record = services.repository.get(record.id)
            console.print(
                f"[green]generated[/green] {plain(target)}  record {plain(record.id)}  "
                f"seed {plain(record.generation['seed'])}  {plain(record.status)}",
                highlight=False,
                soft_wrap=True,
            )
        if wait and any(status != "registered" for status in statuses.values()):
            raise typer.Exit(1)  # certified, but not every record made it onto the chain
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()


@app.command()
def reproduce(
    record_id: Annotated[str, typer.Argument(help="Record of a generated image.")],
    data_dir: DataDir = None,
    prompt: Annotated[str | None, typer.Option(help="The prompt, when only its SHA-256 was recorded.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Generate a recorded image again and compare the pixels with the certified file."""
    from provenance.jobs.reproduce import reproduce as run_reproduce

    services = _open(_settings(data_dir))
    try:
        report = run_reproduce(services, record_id, prompt=prompt)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    if as_json:
        _print_json(report.as_dict())
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


@app.command()
def mint(
    record_id: Annotated[str, typer.Argument(help="Record to mint (it must be registered on chain).")],
    to: Annotated[str, typer.Option("--to", help="Address that receives the token.")],
    data_dir: DataDir = None,
) -> None:
    """Mint a certified record as an NFT (custodial: the service pays the gas)."""
    from provenance.nft.service import checked_address

    try:
        to = checked_address(to, "--to")  # the API's rule: EIP-55 checksum when mixed case, never 0x0
    except ProvenanceError as exc:
        _fail(exc.detail)
    services = _open(_settings(data_dir), signing=False)
    try:
        result = services.nft.mint(record_id, to, account_id=services.admin_account_id)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    console.print(f"minted token {clean(result.token_id)} to {clean(result.owner)}", markup=False, highlight=False)
    console.print(
        f"tx {clean(result.tx_hash)}  contract {clean(result.contract)}  uri {clean(result.token_uri)}",
        markup=False,
        highlight=False,
    )


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run a Celery generation worker (PROVENANCE_JOB_BACKEND=celery, REDIS_URL set)."""
    import os

    if data_dir is not None:
        os.environ["PROVENANCE_DATA_DIR"] = str(data_dir)
    from provenance.jobs.celery_app import run_worker

    try:
        run_worker()
    except ProvenanceError as exc:
        _fail(exc.detail)


VERDICT_COLOURS = {
    "authentic": "green",
    "pending": "yellow",
    "unavailable": "yellow",
    "modified": "yellow",
    "unknown": "white",
    "invalid": "red",
    "untrusted": "red",
    "mismatch": "red",
}
# The same exit code whatever the output format: 0 only when the verdict is authentic.
VERIFY_EXIT = {"authentic": 0}


def _verdict_markup(verdict: Any) -> str:
    """The verdict word in its colour; anything unexpected is printed as text, in white."""
    colour = VERDICT_COLOURS.get(verdict, "white") if isinstance(verdict, str) else "white"
    return f"[bold {colour}]{plain(verdict)}[/]"


def _box(region: Any) -> str:
    """``(x0, y0)-(x1, y1), N% of the picture`` for a region dict (``box`` and ``share``)."""
    if not isinstance(region, dict):
        return plain(region)
    box, share = region.get("box"), region.get("share")
    where = (
        f"({plain(box[0])}, {plain(box[1])})-({plain(box[2])}, {plain(box[3])})"
        if isinstance(box, list | tuple) and len(box) == 4
        else plain(box)
    )
    return f"{where}, {share:.1%} of the picture" if isinstance(share, int | float) else where


def _print_report(result: dict[str, Any]) -> None:
    """The verification report as text: what ``--json`` says, for a person.

    Every string in ``result`` may carry text from the upload (manifest titles, record ids claimed by a
    manifest, error details), so each goes through :func:`plain`. The fields the verifier may not fill
    yet (``modification``, ``edited_regions``, ...) are read with ``.get``.
    """
    verdict = result.get("verdict")
    console.print(
        f"verdict: {_verdict_markup(verdict)}  record: {plain(result.get('record_id') or '-')}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(plain(result.get("summary") or ""), highlight=False, soft_wrap=True)
    for reason in result.get("reasons") or []:
        lead = "note:" if DEV_CHAIN_WARNING in reason else "because"
        console.print(f"  {lead} {plain(reason)}", highlight=False, soft_wrap=True)
    for item in result.get("evidence") or []:
        odds = item.get("false_positive_probability")
        extra = f", false-positive probability {odds:.1e}" if isinstance(odds, int | float) else ""
        console.print(
            f"  evidence: {plain(item.get('kind'))} ({plain(item.get('strength'))}{extra}) "
            f"record {plain(item.get('record_id') or '-')}",
            highlight=False,
            soft_wrap=True,
        )
    _print_modification(result)
    _print_checks(result.get("checks") or {})


def _print_modification(result: dict[str, Any]) -> None:
    """Modification kind, changes, regions, origin and a copied mark: the part of ``--json`` about edits."""
    from provenance.verify.verifier import MODIFICATIONS

    kind = result.get("modification")
    if kind:
        sentence = MODIFICATIONS.get(kind, "") if isinstance(kind, str) else ""
        console.print(f"modification: [bold]{plain(kind)}[/]  {plain(sentence)}", highlight=False, soft_wrap=True)
    changes = result.get("changes") or []
    if changes:
        console.print(f"changes: {'; '.join(plain(change) for change in changes)}", highlight=False, soft_wrap=True)
    for region in result.get("edited_regions") or []:
        console.print(f"  edited region: {_box(region)}", highlight=False, soft_wrap=True)
    contained = result.get("contained_region")
    if contained:
        console.print(
            f"  contained region: {_box(contained)} (where the certified content sits)", highlight=False, soft_wrap=True
        )
    origin = result.get("origin")
    if isinstance(origin, dict) and origin.get("record_id"):
        account = origin.get("account")
        by = f" of account {plain(account)}" if account else ""
        how = "derived from" if origin.get("derived") else "origin:"
        console.print(f"{how} record {plain(origin['record_id'])}{by}", highlight=False, soft_wrap=True)
    copied = result.get("copied_mark")
    if isinstance(copied, dict) and copied:
        console.print(
            f"[bold red]WARNING[/]: a mark of record {plain(copied.get('claimed_by_mark') or '-')} was found on "
            "different content (a copied mark): this is not provenance",
            highlight=False,
            soft_wrap=True,
        )
        if copied.get("detail"):
            console.print(f"  {plain(copied['detail'])}", highlight=False, soft_wrap=True)


def _print_checks(checks: dict[str, Any]) -> None:
    """One table row per check; every cell is escaped (rich renders markup in ``str`` cells)."""
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details", overflow="fold")
    c2pa = checks.get("c2pa") or {}
    found = c2pa.get("summary")
    summary: dict[str, Any] = found if isinstance(found, dict) else {}
    c2pa_details = [str(failure) for failure in c2pa.get("failures") or []]
    if summary.get("title"):  # the manifest's own title, beside its failures
        c2pa_details.append(f"title {summary['title']}")
    table.add_row(
        "c2pa",
        "valid, trusted"
        if c2pa.get("trusted")
        else ("valid, NOT trusted" if c2pa.get("valid") else ("invalid" if c2pa.get("present") else "absent")),
        plain("; ".join(c2pa_details)),
    )
    exact = checks.get("exact") or {}
    table.add_row(
        "exact",
        "match" if exact.get("matched") else "no match",
        f"signature {'valid' if exact.get('signature_valid') else 'INVALID'}, "
        f"key {plain(str(exact.get('key_id'))[:16])}…"
        if exact.get("matched")
        else plain(exact.get("sha256") or ""),
    )
    wm = checks.get("watermark") or {}
    odds = wm.get("false_positive_probability")
    table.add_row(
        "watermark",
        "detected" if wm.get("detected") else "not found",
        f"id {plain(wm.get('watermark_id'))}, {plain(wm.get('bit_errors'))} bit errors"
        + (f", false-positive probability {odds:.1e}" if isinstance(odds, int | float) else "")
        if wm.get("detected")
        else plain(wm.get("reason") or ""),
    )
    ch = checks.get("chain") or {}
    table.add_row(
        "chain",
        "registered" if ch.get("registered") else "not registered",
        f"block {plain(ch.get('block_number'))}, registry {plain(ch.get('registry_address'))} "
        f"on chain {plain(ch.get('chain_id'))}"
        if ch.get("registered")
        else plain(ch.get("error") or ""),
    )
    ip = checks.get("ipfs") or {}
    table.add_row("ipfs", "pinned" if ip.get("pinned") else "not pinned", plain(ip.get("cid") or ""))
    console.print(table)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Image to check.")],
    data_dir: DataDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full JSON report.")] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="A provenance bundle: verify without the service or its database.")
    ] = None,
    rpc: Annotated[
        list[str] | None,
        typer.Option(
            help="With --bundle: a JSON-RPC endpoint of the bundle's chain; give it several times (independent "
            "providers) and every read must agree on all of them."
        ),
    ] = None,
    confirmations: Annotated[
        int | None,
        typer.Option(
            help="With --bundle: read the chain at latest minus N blocks (default 0; 12 or more on a public chain)."
        ),
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="With --bundle: the registry address you pinned (the operator publishes it).")
    ] = None,
    chain_id: Annotated[int | None, typer.Option(help="With --registry: the chain id you pinned.")] = None,
    trust: Annotated[
        Path | None, typer.Option(help="With --bundle: a trust document (provenance-trust.json) to pin.")
    ] = None,
) -> None:
    """Check an image: C2PA manifest, exact record, watermark, chain and IPFS.

    With --bundle and --rpc nothing of the service is used: the hash, the ECDSA signature, the
    chain entry or Merkle proof, the signing key and the C2PA anchor are checked against the
    registry you pinned with --registry (or --trust). Without a pin the verdict is never
    authentic. Several --rpc endpoints are read at the same block and must agree: any
    disagreement (a forked or lying node) or failing endpoint makes the verdict untrusted.
    Exit code 0 only for an authentic verdict, 1 for any other, 2 for bad input.
    """
    if not file.is_file():
        _fail(f"no such file: {file}")
    if bundle is not None:
        _verify_bundle(
            file,
            bundle,
            rpc or [],
            as_json,
            registry=registry,
            chain_id=chain_id,
            trust_path=trust,
            confirmations=confirmations or 0,
        )
        return
    if registry or trust or rpc or confirmations is not None:
        _fail("--rpc, --confirmations, --registry and --trust go with --bundle")
    services = _open(_settings(data_dir), signing=False)
    try:
        result = services.verifier.verify(file.read_bytes()).as_dict()
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    if as_json:
        _print_json(result)
    else:
        _print_report(result)
    raise typer.Exit(VERIFY_EXIT.get(result["verdict"], 1))


def _verify_bundle(
    file: Path,
    bundle_path: Path,
    rpc: list[str],
    as_json: bool,
    *,
    registry: str | None,
    chain_id: int | None,
    trust_path: Path | None,
    confirmations: int = 0,
) -> None:
    from provenance.trust.document import TrustDocument, TrustRoot
    from provenance.verify.bundle import verify_with_bundle

    if not rpc:
        _fail("--bundle needs --rpc URL (a JSON-RPC endpoint of the bundle's chain; several for a cross-check)")
    if confirmations < 0:
        _fail(f"--confirmations must be 0 or more, not {confirmations}")
    try:
        bundle = json.loads(bundle_path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"cannot read the bundle {bundle_path}: {exc}")
    try:
        trust = TrustDocument.from_file(trust_path) if trust_path is not None else None
        pin = TrustRoot.of(registry, chain_id) if registry else None
        if (
            pin is not None
            and trust is not None
            and not trust.pin().names(pin.chain_id or trust.chain_id, pin.registry_address)
        ):
            _fail("--registry and --trust name different registries: pin one")
        report = verify_with_bundle(file.read_bytes(), bundle, rpc, pin=pin, trust=trust, confirmations=confirmations)
    except ProvenanceError as exc:
        _fail(exc.detail)
    _print_bundle_report(report, as_json)
    raise typer.Exit(report.exit_code)


def _print_bundle_report(report: Any, as_json: bool) -> None:
    """A ``BundleReport``: every string in it may come from the bundle, so each goes through :func:`plain`."""
    if as_json:
        _print_json(report.as_dict())
        return
    console.print(f"verdict: {_verdict_markup(report.verdict)}  (bundle, no service)", highlight=False)
    if report.pinned is None:
        console.print("[yellow]nothing pinned[/yellow]: pass --registry ADDRESS or --trust trust.json", highlight=False)
    else:
        console.print(f"pinned: {plain(report.pinned.describe())}", highlight=False, soft_wrap=True)
    for reason in report.reasons:
        # The development-chain sentence is a caveat on any verdict, not a cause of it.
        lead = "note:" if DEV_CHAIN_WARNING in reason else "because"
        console.print(f"  {lead} {plain(reason)}", highlight=False, soft_wrap=True)
    for name, check in report.checks.items():
        state = "[green]ok[/green]" if check.get("ok") else "[red]FAILED[/red]"
        detail = check.get("error") or ", ".join(
            f"{k}={v}" for k, v in check.items() if k not in ("ok", "summary", "failures", "ingredients")
        )
        console.print(f"  {plain(name):<10} {state}  {plain(detail)}", highlight=False, soft_wrap=True)


@keys_app.callback()
def keys(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """List signing keys (public halves only) and the C2PA trust root."""
    if ctx.invoked_subcommand is not None:
        return
    from provenance.db.repository import RecordRepository
    from provenance.db.session import make_engine, migrate, session_factory
    from provenance.manifests.pki import load_or_create
    from provenance.signing import KeyStore

    settings = _settings(data_dir)
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    repo = RecordRepository(session_factory(engine))
    active = KeyStore(settings.resolved_data_dir / "keys", external_key_file=settings.signing_key_file).active()
    repo.ensure_key(active.key_id, active.public_key_pem)
    for row, count, _ in repo.signing_keys():
        marker = " (active)" if row.key_id == active.key_id else ""
        console.print(f"[bold]{plain(row.key_id)}[/bold]{marker}  records signed: {count}", highlight=False)
        console.print(clean(row.public_key_pem.strip(), multiline=True), markup=False, highlight=False)
    creds = load_or_create(
        settings.resolved_data_dir / "c2pa", chain_path=settings.c2pa_cert_chain, key_path=settings.c2pa_private_key
    )
    if creds.trust_anchors_pem:
        console.print("[bold]C2PA root certificate[/bold]")
        console.print(
            clean(creds.trust_anchors_pem.decode(errors="replace").strip(), multiline=True),
            markup=False,
            highlight=False,
        )
    engine.dispose()


@keys_app.command("rotate")
def keys_rotate(
    data_dir: DataDir = None,
    revoke_previous: Annotated[
        bool, typer.Option("--revoke-previous", help="Revoke the old key on the registry (e.g. it leaked).")
    ] = False,
) -> None:
    """Create a signing key, publish it on the registry, then make it active.

    Old records keep verifying with their own key unless it is revoked.
    """
    from provenance.trust.document import rotate_signing_key

    services = _open(_settings(data_dir), signing=False)
    try:
        result = rotate_signing_key(services, revoke_previous=revoke_previous)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    console.print(
        f"new active key {clean(result['key_id'])}, published in block {clean(result['valid_from_block'])}",
        markup=False,
        highlight=False,
    )
    if "revoked" in result:
        revoked = result["revoked"]
        console.print(
            f"revoked {clean(revoked['key_id'])} at block {clean(revoked['revoked_at_block'])}",
            markup=False,
            highlight=False,
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (hex) to revoke on the registry.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a signing key on the registry: nothing it signs is authentic from the next block on."""
    from provenance.trust.document import revoke_signing_key

    services = _open(_settings(data_dir), signing=False)
    try:
        result = revoke_signing_key(services, key_id)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    console.print(
        f"revoked {clean(result['key_id'])} at block {clean(result['revoked_at_block'])} "
        f"(tx {clean(result['revoked_tx'])})",
        markup=False,
        highlight=False,
    )


@fingerprints_app.command("backfill")
def fingerprints_backfill(data_dir: DataDir = None) -> None:
    """Fingerprint records certified before fingerprints existed, so verify can find their copies."""
    from provenance.marks.fingerprint import Fingerprinter, backfill

    services = _open(_settings(data_dir), signing=False)
    try:
        added = backfill(services.repository, services.store, Fingerprinter())
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    console.print(f"fingerprinted {added} record(s)", markup=False, highlight=False)


@trust_app.command("export")
def trust_export(
    data_dir: DataDir = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the document here (default: standard output).")
    ] = None,
) -> None:
    """Write the trust document verifiers pin (same as GET /.well-known/provenance-trust.json).

    It lists every writer, signing key and C2PA anchor on the registry (from its events); entries
    this service did not publish are flagged, and each warning is also printed on standard error.
    """
    from provenance.trust.document import build_trust_document

    services = _open(_settings(data_dir), signing=False)
    try:
        built = build_trust_document(services)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        services.close()
    document = built.to_json()
    for warning in built.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    if out is None:
        sys.stdout.write(document)
        return
    from provenance.fsutil import write_atomic

    write_atomic(out, document.encode())
    err.print(f"trust document written to {out}")


@chain_app.command("deploy")
def chain_deploy(
    data_dir: DataDir = None,
    rpc_url: Annotated[str | None, typer.Option(help="JSON-RPC URL (default RPC_URL).")] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the deployer's hex private key; the deployer owns both contracts "
            "(default CHAIN_OWNER_KEY_FILE, else CHAIN_KEY_FILE / CHAIN_PRIVATE_KEY)."
        ),
    ] = None,
    writer: Annotated[
        str | None,
        typer.Option(
            help="Address allowed to register and mint (default: the CHAIN_KEY_FILE / CHAIN_PRIVATE_KEY key, "
            "else the deployer)."
        ),
    ] = None,
) -> None:
    """Deploy ProvenanceRegistry and ProvenanceNFT to a chain and print their addresses."""
    from web3 import Web3

    from provenance.chain.registry import connect
    from provenance.chain.setup import deploy_contracts, load_chain_account, load_owner_account, read_key_file
    from provenance.chain.transactions import TxSender

    settings = _settings(data_dir)
    url = rpc_url or settings.rpc_url
    if not url:
        _fail("give --rpc-url or set RPC_URL")
    if writer is not None and not Web3.is_address(writer):
        _fail(f"--writer {writer!r} is not an address")
    try:
        hot = load_chain_account(settings)
        owner = read_key_file(key_file, "--key-file") if key_file else load_owner_account(settings) or hot
        if owner is None:
            _fail("no deployer key: pass --key-file, or set CHAIN_OWNER_KEY_FILE, CHAIN_KEY_FILE or CHAIN_PRIVATE_KEY")
        assert owner is not None
        # The hot key registers and mints; the deployer keeps only the owner's (admin) role.
        writer = writer or (hot.address if hot is not None else owner.address)
        deployment = deploy_contracts(
            TxSender(connect(url), owner), settings.nft_royalty_bps, settings.tx_timeout_s, writer=writer
        )
    except ProvenanceError as exc:
        _fail(exc.detail)
    # Keep a note of every deployment next to the service's other state.
    log_file = settings.resolved_data_dir / "chain" / "deployments.jsonl"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as fh:
        fh.write(json.dumps({**deployment, "rpc_url": url}) + "\n")
    d = {key: clean(value) for key, value in deployment.items()}  # what the RPC answered, as text
    console.print(
        f"ProvenanceRegistry at {d['registry_address']} (block {d['registry_block']}), "
        f"ProvenanceNFT at {d['nft_address']}, chain {d['chain_id']}; "
        f"owner {d['owner']}, writer and minter {d['writer']}",
        markup=False,
        highlight=False,
    )
    console.print(f"export REGISTRY_ADDRESS={d['registry_address']}", markup=False, highlight=False)
    console.print(f"export NFT_ADDRESS={d['nft_address']}", markup=False, highlight=False)


def _open_chain_or_fail(settings: Settings):  # type: ignore[no-untyped-def]
    """The chain alone (no database, keys or C2PA): what the owner's commands need."""
    from provenance.chain.setup import open_chain

    try:
        return open_chain(settings)
    except ProvenanceError as exc:
        _fail(exc.detail)


def _require_chain_admin(chain: Any) -> Any:
    if chain.admin is None:
        chain.close()
        _fail(
            "no registry owner key: set CHAIN_OWNER_KEY_FILE to the owner's key file "
            "(embedded chain: data/chain/owner.key, unless ownership was transferred)"
        )
    return chain.admin


def _address_or_fail(value: str, what: str) -> str:
    from web3 import Web3

    if not Web3.is_address(value):
        _fail(f"{what} {value!r} is not an address")
    return Web3.to_checksum_address(value)


@chain_app.command("transfer-ownership")
def chain_transfer_ownership(
    new_owner: Annotated[str, typer.Argument(help="Address of the new owner (admin) key.")],
    data_dir: DataDir = None,
) -> None:
    """Step one of two: make NEW_OWNER the pending owner of the registry and the NFT contract.

    Nothing changes until the new owner runs `provenance chain accept-ownership`. Uses the data
    dir's owner key (chain/owner.key) or CHAIN_OWNER_KEY_FILE.
    """
    target = _address_or_fail(new_owner, "NEW_OWNER")
    chain = _open_chain_or_fail(_settings(data_dir))
    try:
        admin = _require_chain_admin(chain)
        receipts = admin.transfer_ownership(target)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        chain.close()
    for tx_hash, block in receipts:
        console.print(f"transfer started in block {clean(block)} (tx {clean(tx_hash)})", markup=False, highlight=False)
    console.print(
        f"{clean(target)} is now the pending owner; it must run `provenance chain accept-ownership --key-file KEY`",
        markup=False,
        highlight=False,
    )


@chain_app.command("accept-ownership")
def chain_accept_ownership(
    key_file: Annotated[Path, typer.Option("--key-file", help="File with the new owner's hex private key.")],
    data_dir: DataDir = None,
) -> None:
    """Step two: the pending owner takes over the registry and the NFT contract."""
    from provenance.chain.admin import RegistryAdmin
    from provenance.chain.setup import fund_dev_accounts, read_key_file

    settings = _settings(data_dir)
    try:
        account = read_key_file(key_file, "--key-file")
    except ProvenanceError as exc:
        _fail(exc.detail)
    chain = _open_chain_or_fail(settings)
    try:
        w3 = chain.registry.w3
        if chain.node is not None:  # the embedded dev chain: pay the new owner's gas
            fund_dev_accounts(w3, account.address)
        admin = RegistryAdmin(
            w3,
            chain.registry.address,
            chain.nft.address if chain.nft is not None else None,
            account,
            settings.tx_timeout_s,
        )
        receipts = admin.accept_ownership()
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        chain.close()
    for tx_hash, block in receipts:
        console.print(
            f"ownership accepted in block {clean(block)} (tx {clean(tx_hash)})", markup=False, highlight=False
        )
    console.print(
        f"{clean(account.address)} owns the contracts now: point CHAIN_OWNER_KEY_FILE at {clean(key_file)}",
        markup=False,
        highlight=False,
    )


def _set_role(address: str, allow: bool, data_dir: Path | None, role: str) -> None:
    target = _address_or_fail(address, "ADDRESS")
    chain = _open_chain_or_fail(_settings(data_dir))
    try:
        admin = _require_chain_admin(chain)
        change = admin.set_writer if role == "writer" else admin.set_minter
        tx_hash, block = change(target, allow)
    except ProvenanceError as exc:
        _fail(exc.detail)
    finally:
        chain.close()
    state = "allowed" if allow else "revoked"
    console.print(
        f"{role} {clean(target)} {state} from block {clean(block)} (tx {clean(tx_hash)})", markup=False, highlight=False
    )


@chain_app.command("set-writer")
def chain_set_writer(
    address: Annotated[str, typer.Argument(help="The key's address.")],
    allow: Annotated[bool, typer.Option("--allow/--revoke", help="Allow or revoke registration.")],
    data_dir: DataDir = None,
) -> None:
    """Allow or revoke a key to register content on the registry (owner key needed)."""
    _set_role(address, allow, data_dir, "writer")


@chain_app.command("set-minter")
def chain_set_minter(
    address: Annotated[str, typer.Argument(help="The key's address.")],
    allow: Annotated[bool, typer.Option("--allow/--revoke", help="Allow or revoke minting.")],
    data_dir: DataDir = None,
) -> None:
    """Allow or revoke a key to mint and sign vouchers on the NFT contract (owner key needed)."""
    _set_role(address, allow, data_dir, "minter")


@chain_app.command("info")
def chain_info(data_dir: DataDir = None) -> None:
    """Show the chain, the contracts and the roles this data dir uses."""
    services = _open(_settings(data_dir), signing=False)
    try:
        chain = services.chain
        r = chain.registry
        _print_json(
            {
                "chain_id": r.chain_id,
                "rpc_url": r.rpc_url,
                "registry_address": r.address,
                "nft_address": chain.nft.address if chain.nft is not None else None,
                "owner": r.owner(),
                "pending_owner": r.reader.pending_owner(),
                "operator": r.account.address if r.account is not None else None,
                "owner_key_available": chain.admin is not None,
                "trust_anchors": r.trust_anchors(),
                "block_number": r.w3.eth.block_number,
            }
        )
    finally:
        services.close()


def main() -> None:
    """Run the CLI: errors are one line on stderr, never a traceback.

    Exit codes: 0 success (for ``verify``: the verdict is authentic), 1 a failure that is not the
    caller's input (a dependency down, a chain refusal, a verdict other than authentic), 2 bad input or
    configuration. ``PROVENANCE_DEBUG=1`` re-raises unexpected errors with their traceback.
    """
    try:
        # Not standalone: exceptions reach the handlers below instead of click's and typer's tracebacks.
        result = app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("error: interrupted", markup=False)
        sys.exit(130)
    except TyperException as exc:  # usage errors (unknown option, missing argument): typer's own click
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except (InputError, ConfigurationError) as exc:
        err.print(f"error: {clean(exc.detail)}", markup=False, highlight=False)
        sys.exit(2)
    except ProvenanceError as exc:
        err.print(f"error: {clean(exc.detail)}", markup=False, highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("error: interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("PROVENANCE_DEBUG"):
            raise
        err.print(
            f"error: unexpected {type(exc).__name__}: {clean(exc)} (PROVENANCE_DEBUG=1 shows the traceback)",
            markup=False,
            highlight=False,
        )
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)  # click returns the code of a typer.Exit here


if __name__ == "__main__":
    main()
