"""``provenance mint``: a certified record as an NFT."""

from __future__ import annotations

from typing import Annotated

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import console, fail
from provenance.cli.text import clean
from provenance.errors import ProvenanceError


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
        fail(exc.detail)
    services = open_services(settings_for(data_dir), signing=False)
    try:
        result = services.nft.mint(record_id, to, account_id=services.admin_account_id)
    except ProvenanceError as exc:
        fail(exc.detail)
    finally:
        services.close()
    console.print(f"minted token {clean(result.token_id)} to {clean(result.owner)}", markup=False, highlight=False)
    console.print(
        f"tx {clean(result.tx_hash)}  contract {clean(result.contract)}  uri {clean(result.token_uri)}",
        markup=False,
        highlight=False,
    )
