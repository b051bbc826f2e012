"""``provenance fingerprints``: perceptual fingerprints of certified images."""

from __future__ import annotations

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import console, fail
from provenance.errors import ProvenanceError

fingerprints_app = typer.Typer(help="Perceptual fingerprints of certified images.", no_args_is_help=True)
"""The ``fingerprints`` command group."""


@fingerprints_app.command("backfill")
def fingerprints_backfill(data_dir: DataDir = None) -> None:
    """Fingerprint records certified before fingerprints existed, so verify can find their copies."""
    from provenance.marks.fingerprint import Fingerprinter, backfill

    services = open_services(settings_for(data_dir), signing=False)
    try:
        added = backfill(services.repository, services.store, Fingerprinter())
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    console.print(f"fingerprinted {added} record(s)", markup=False, highlight=False)
