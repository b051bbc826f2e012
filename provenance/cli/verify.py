"""``provenance verify``: check an image against the service, or offline against a bundle and a pinned registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import fail, print_bundle_report, print_json, print_report
from provenance.errors import ProvenanceError

# The same exit code whatever the output format: 0 only when the verdict is authentic.
VERIFY_EXIT = {"authentic": 0}
"""Exit code per verdict; every verdict not listed exits 1."""


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
        fail(f"no such file: {file}")
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
        fail("--rpc, --confirmations, --registry and --trust go with --bundle")
    services = open_services(settings_for(data_dir), signing=False)
    try:
        result = services.verifier.verify(file.read_bytes()).as_dict()
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    if as_json:
        print_json(result)
    else:
        print_report(result)
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
    """Verify ``file`` with only a bundle, the chain and what the caller pinned; exits with the report's code."""
    from provenance.trust.document import TrustDocument, TrustRoot
    from provenance.verify.bundle import verify_with_bundle

    if not rpc:
        fail("--bundle needs --rpc URL (a JSON-RPC endpoint of the bundle's chain; several for a cross-check)")
    if confirmations < 0:
        fail(f"--confirmations must be 0 or more, not {confirmations}")
    try:
        bundle = json.loads(bundle_path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read the bundle {bundle_path}: {exc}")
    try:
        trust = TrustDocument.from_file(trust_path) if trust_path is not None else None
        pin = TrustRoot.of(registry, chain_id) if registry else None
        if (
            pin is not None
            and trust is not None
            and not trust.pin().names(pin.chain_id or trust.chain_id, pin.registry_address)
        ):
            fail("--registry and --trust name different registries: pin one")
        report = verify_with_bundle(file.read_bytes(), bundle, rpc, pin=pin, trust=trust, confirmations=confirmations)
    except ProvenanceError as exc:
        fail(exc.detail)
    print_bundle_report(report, as_json)
    raise typer.Exit(report.exit_code)
