"""``provenance chain``: deploy the contracts, hand over ownership, grant roles, show what a data dir uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provenance.cli.common import DataDir, open_services, settings_for
from provenance.cli.render import console, fail, print_json
from provenance.cli.text import clean
from provenance.config import Settings
from provenance.errors import ProvenanceError

if TYPE_CHECKING:  # web3 loads only for the commands that talk to a chain
    from provenance.chain.setup import ChainConnection

chain_app = typer.Typer(help="The ProvenanceRegistry contract.", no_args_is_help=True)
"""The ``chain`` command group."""


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

    settings = settings_for(data_dir)
    url = rpc_url or settings.rpc_url
    if not url:
        fail("give --rpc-url or set RPC_URL")
    if writer is not None and not Web3.is_address(writer):
        fail(f"--writer {writer!r} is not an address")
    try:
        hot = load_chain_account(settings)
        owner = read_key_file(key_file, "--key-file") if key_file else load_owner_account(settings) or hot
        if owner is None:
            fail("no deployer key: pass --key-file, or set CHAIN_OWNER_KEY_FILE, CHAIN_KEY_FILE or CHAIN_PRIVATE_KEY")
        assert owner is not None
        # The hot key registers and mints; the deployer keeps only the owner's (admin) role.
        writer = writer or (hot.address if hot is not None else owner.address)
        deployment = deploy_contracts(
            TxSender(connect(url), owner), settings.nft_royalty_bps, settings.tx_timeout_s, writer=writer
        )
    except ProvenanceError as exc:
        fail(exc.detail)
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


def _open_chain_or_fail(settings: Settings) -> ChainConnection:
    """The chain alone (no database, keys or C2PA): what the owner's commands need."""
    from provenance.chain.setup import open_chain

    try:
        return open_chain(settings)
    except ProvenanceError as exc:
        fail(exc.detail)


def _require_chain_admin(chain: Any) -> Any:
    if chain.admin is None:
        chain.close()
        fail(
            "no registry owner key: set CHAIN_OWNER_KEY_FILE to the owner's key file "
            "(embedded chain: data/chain/owner.key, unless ownership was transferred)"
        )
    return chain.admin


def _address_or_fail(value: str, what: str) -> str:
    from web3 import Web3

    if not Web3.is_address(value):
        fail(f"{what} {value!r} is not an address")
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
    chain = _open_chain_or_fail(settings_for(data_dir))
    try:
        admin = _require_chain_admin(chain)
        receipts = admin.transfer_ownership(target)
    except ProvenanceError as exc:
        fail(exc.detail)
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

    settings = settings_for(data_dir)
    try:
        account = read_key_file(key_file, "--key-file")
    except ProvenanceError as exc:
        fail(exc.detail)
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
        fail(exc.detail)
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
    chain = _open_chain_or_fail(settings_for(data_dir))
    try:
        admin = _require_chain_admin(chain)
        change = admin.set_writer if role == "writer" else admin.set_minter
        tx_hash, block = change(target, allow)
    except ProvenanceError as exc:
        fail(exc.detail)
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
    services = open_services(settings_for(data_dir), signing=False)
    try:
        chain = services.chain
        r = chain.registry
        print_json(
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
