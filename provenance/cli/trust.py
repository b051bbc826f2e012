"""``provenance trust``: the trust document verifiers pin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import err, fail
from provenance.errors import ProvenanceError

trust_app = typer.Typer(help="The trust root verifiers pin.", no_args_is_help=True)
"""The ``trust`` command group."""


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

    services = open_services(settings_for(data_dir), signing=False)
    try:
        anchors_pem = services.credentials.trust_anchors_pem
        built = build_trust_document(services.chain, services.keys, services.repository, anchors_pem)
    except ProvenanceError as exc:
        fail(exc.detail)
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
