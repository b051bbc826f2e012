"""``provenance keys``: the ECDSA signing keys (list, rotate, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import console, fail
from provenance.cli.text import clean, plain
from provenance.errors import ProvenanceError

keys_app = typer.Typer(help="ECDSA signing keys.", invoke_without_command=True)
"""The ``keys`` command group; without a subcommand it lists the keys."""


@keys_app.callback()
def keys(ctx: typer.Context, data_dir: DataDir = None) -> None:
    """List signing keys (public halves only) and the C2PA trust root."""
    if ctx.invoked_subcommand is not None:
        return
    from provenance.db.repository import RecordRepository
    from provenance.db.session import make_engine, migrate, session_factory
    from provenance.manifests.pki import load_or_create
    from provenance.signing import KeyStore

    settings = settings_for(data_dir)
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
    from provenance.trust.admin import rotate_signing_key

    services = open_services(settings_for(data_dir), signing=False)
    try:
        owner, keys, records = services.chain.admin, services.keys, services.repository
        result = rotate_signing_key(owner, keys, records, revoke_previous=revoke_previous)
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    console.print(
        f"new active key {clean(result.key_id)}, published in block {clean(result.valid_from_block)}",
        markup=False,
        highlight=False,
    )
    if result.revoked is not None:
        revoked = result.revoked
        console.print(
            f"revoked {clean(revoked.key_id)} at block {clean(revoked.revoked_at_block)}",
            markup=False,
            highlight=False,
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (hex) to revoke on the registry.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a signing key on the registry: nothing it signs is authentic from the next block on."""
    from provenance.trust.admin import revoke_signing_key

    services = open_services(settings_for(data_dir), signing=False)
    try:
        result = revoke_signing_key(services.chain.admin, services.keys, services.repository, key_id)
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    console.print(
        f"revoked {clean(result.key_id)} at block {clean(result.revoked_at_block)} (tx {clean(result.revoked_tx)})",
        markup=False,
        highlight=False,
    )
