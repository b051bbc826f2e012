"""Open the chain the settings describe: the embedded anvil, or a public RPC.

Two keys, two roles. The *owner* (admin) key owns both contracts: it alone allows writers and
minters and publishes the trust root (signing keys, C2PA trust anchors). The *operator* (hot) key
registers content and mints; it sits on every service instance, so it must not be able to change
what verifiers trust.

Embedded: anvil runs from the data dir; both keys are created there on the data dir's first start only,
``chain/owner.key`` and ``chain/operator.key`` (0600), and funded with anvil's ``anvil_setBalance``. An owner
key moved away later (ownership transferred) stays away: owner operations are unavailable, quietly. The
owner key deploys the registry and the NFT contract on first start (the operator becomes writer and minter) and their
addresses, roles and code hashes are saved in ``chain/deployment.json``. If the saved registry has
no code (the dev chain was reset) or the committed artifacts changed, both are deployed again and
the caller is told, so it can re-anchor every record; ``ChainConnection.redeploy`` does the same
while the service runs.

External (``RPC_URL``): the hot key comes from ``CHAIN_PRIVATE_KEY`` or ``CHAIN_KEY_FILE``, the
owner key (optional: only admin operations need it) from ``CHAIN_OWNER_KEY_FILE``, the addresses
from ``REGISTRY_ADDRESS`` and ``NFT_ADDRESS``; ``provenance chain deploy`` deploys both.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3

from provenance.chain.admin import RegistryAdmin
from provenance.chain.anvil import AnvilNode
from provenance.chain.artifacts import artifact_code_hash, load_artifact
from provenance.chain.nft import NFT, Web3Nft, deploy_nft
from provenance.chain.registry import REGISTRY, Web3Registry, connect, load_account
from provenance.chain.transactions import TxSender
from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic, write_private

log = logging.getLogger(__name__)

OWNER_KEY = "owner.key"
OPERATOR_KEY = "operator.key"
_DEV_BALANCE = 10**22  # wei anvil gives each embedded key
_LOW_BALANCE = 10**20  # below this it is topped up
# The embedded chain must be deployed (again) but the owner key was moved away after the first start.
_NO_DEPLOYER = (
    "The dev chain's contracts must be deployed again, and that needs the owner key {} (moved away): "
    "put it back or set CHAIN_OWNER_KEY_FILE."
)


@dataclass
class ChainConnection:
    """The registry and NFT clients (hot key), the owner's admin client if its key is at hand, and the node."""

    registry: Web3Registry
    nft: Web3Nft | None
    node: AnvilNode | None
    settings: Settings
    redeployed: bool = False
    admin: RegistryAdmin | None = None
    # Embedded only: the data dir's owner key, which deploys again after a reset even when it no
    # longer owns the current contracts (ownership was transferred) and so ``admin`` is None.
    deployer: TxSender | None = None

    def close(self) -> None:
        """Stop the embedded node if this process started it."""
        if self.node is not None:
            self.node.stop()

    def redeploy(self) -> None:
        """Embedded chain only: deploy both contracts again (from the owner key) and point the clients at them."""
        if self.node is None or self.registry.sender is None:
            raise ConfigurationError(
                "The registry is missing on an external chain: check RPC_URL and REGISTRY_ADDRESS."
            )
        if self.deployer is None:
            raise ConfigurationError(_NO_DEPLOYER.format(chain_dir(self.settings) / OWNER_KEY))
        w3 = self.registry.w3
        fund_dev_accounts(w3, self.deployer.address, self.registry.sender.address)
        self.registry.sender.resync()
        self.deployer.resync()
        deployment = _deploy_all(self.deployer, self.registry.sender.address, self.settings, chain_dir(self.settings))
        registry_address, nft_address = str(deployment["registry_address"]), str(deployment["nft_address"])
        self.registry.rebind(registry_address)
        self.nft = Web3Nft(w3, nft_address, self.registry.sender, timeout_s=self.settings.tx_timeout_s)
        # The fresh contracts belong to the deployer again, whoever owned the old ones.
        self.admin = RegistryAdmin(
            w3, registry_address, nft_address, self.deployer.account, self.settings.tx_timeout_s, sender=self.deployer
        )
        self.redeployed = True


def chain_dir(settings: Settings) -> Path:
    """Where the embedded chain keeps its state, keys and deployment record."""
    return settings.resolved_data_dir / "chain"


def read_key_file(path: Path, variable: str) -> LocalAccount:
    """The account of a file holding a hex private key; ``variable`` names the file in errors."""
    try:
        account = load_account(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"Cannot read {variable}: {exc}") from None
    if account is None:
        raise ConfigurationError(f"{variable} ({path}) is empty.")
    return account


def load_chain_account(settings: Settings) -> LocalAccount | None:
    """The configured hot (operator) key: environment variable first, then key file."""
    if settings.chain_private_key:
        return load_account(settings.chain_private_key)
    if settings.chain_key_file is not None:
        return read_key_file(settings.chain_key_file, "CHAIN_KEY_FILE")
    return None


def load_owner_account(settings: Settings) -> LocalAccount | None:
    """The configured owner (admin) key from ``CHAIN_OWNER_KEY_FILE``, if any."""
    if settings.chain_owner_key_file is not None:
        return read_key_file(settings.chain_owner_key_file, "CHAIN_OWNER_KEY_FILE")
    return None


def embedded_key(directory: Path, name: str, *, create: bool = True) -> LocalAccount | None:
    """A key file in the embedded chain's directory; created (0600) when missing if ``create``, else None."""
    path = directory / name
    if not path.exists():
        if not create:
            return None
        write_private(path, ("0x" + secrets.token_hex(32)).encode())
    return read_key_file(path, str(path))


def _first_initialisation(directory: Path) -> bool:
    """Whether this data dir's embedded chain was never set up: no deployment record and no key yet.

    Only then are chain keys created. Later a missing owner key means it was moved away on purpose (ownership
    transferred to a cold key or a Safe), and a missing operator key is an error, never a new random key.
    """
    return not any((directory / name).exists() for name in ("deployment.json", OWNER_KEY, OPERATOR_KEY))


def fund_dev_accounts(w3: Web3, *addresses: str) -> None:
    """Top up dev-chain accounts: anvil mints ether on request."""
    for address in dict.fromkeys(addresses):
        if w3.eth.get_balance(Web3.to_checksum_address(address)) < _LOW_BALANCE:
            w3.provider.make_request("anvil_setBalance", [address, hex(_DEV_BALANCE)])  # type: ignore[arg-type]


def deploy_contracts(
    sender: TxSender, royalty_bps: int, timeout_s: float = 120.0, *, writer: str | None = None
) -> dict[str, Any]:
    """Deploy the registry, then the NFT contract bound to it, from ``sender``, which owns both.

    ``writer`` (default: the deployer) becomes the registry's writer and the NFT's minter;
    royalties go to the owner. Returns what ``deployment.json`` records.
    """
    owner = sender.address
    writer = Web3.to_checksum_address(writer) if writer else owner
    registry_address, registry_block = sender.deploy(load_artifact(REGISTRY), owner, writer, timeout_s=timeout_s)
    nft_address, nft_block = deploy_nft(
        sender, registry_address, owner, royalty_bps, owner=owner, minter=writer, timeout_s=timeout_s
    )
    return {
        "chain_id": sender.chain_id,
        "registry_address": registry_address,
        "registry_block": registry_block,
        "nft_address": nft_address,
        "nft_block": nft_block,
        "owner": owner,
        "writer": writer,
        # keccak256 of each artifact's runtime code: a later start notices changed contracts.
        "registry_code_hash": artifact_code_hash(REGISTRY),
        "nft_code_hash": artifact_code_hash(NFT),
    }


def _deploy_all(sender: TxSender, writer: str, settings: Settings, directory: Path) -> dict[str, Any]:
    deployment = deploy_contracts(sender, settings.nft_royalty_bps, settings.tx_timeout_s, writer=writer)
    write_atomic(directory / "deployment.json", json.dumps(deployment, indent=1).encode())
    return deployment


def _stale_reason(w3: Web3, deployment: dict[str, Any]) -> str | None:
    """Why the saved embedded deployment cannot be used any more, or None if it can."""
    code = bytes(w3.eth.get_code(Web3.to_checksum_address(deployment["registry_address"])))
    if not code:
        return "the registry has no code (the dev chain was reset)"
    # The registry has no immutables, so its code on chain is the artifact's runtime code byte for
    # byte. The NFT's is not (its registry address is an immutable): compare the recorded hash.
    if keccak(code).hex() != artifact_code_hash(REGISTRY):
        return "the registry on chain is not the committed artifact"
    if deployment.get("nft_code_hash") != artifact_code_hash(NFT):
        return "the NFT contract was deployed from another artifact"
    return None


def _external(settings: Settings) -> ChainConnection:
    assert settings.rpc_url is not None
    w3 = connect(settings.rpc_url, settings.tx_timeout_s)
    if not settings.registry_address:
        raise ConfigurationError(
            "RPC_URL is set but REGISTRY_ADDRESS is not: deploy with `provenance chain deploy` and set it."
        )
    account = load_chain_account(settings)
    sender = TxSender(w3, account) if account is not None else None
    registry = Web3Registry(w3, settings.registry_address, account, rpc_url=settings.rpc_url, sender=sender)
    if not registry.is_deployed():
        raise ConfigurationError(f"No contract at REGISTRY_ADDRESS {registry.address} on chain {registry.chain_id}.")
    if registry.reader.code_hash() != artifact_code_hash(REGISTRY):
        log.warning("The registry at %s is not this version's ProvenanceRegistry artifact.", registry.address)
    nft = Web3Nft(w3, settings.nft_address, sender, timeout_s=settings.tx_timeout_s) if settings.nft_address else None
    owner = load_owner_account(settings)
    admin = None
    if owner is not None:
        admin = _owner_admin(
            RegistryAdmin(w3, registry.address, settings.nft_address, owner, settings.tx_timeout_s, sender=sender)
        )
    elif account is not None and registry.owner() == account.address:
        # A one-key deployment (`chain deploy` with only CHAIN_KEY_FILE): the hot key is the owner.
        admin = RegistryAdmin(w3, registry.address, settings.nft_address, account, settings.tx_timeout_s, sender=sender)
    return ChainConnection(registry=registry, nft=nft, node=None, settings=settings, admin=admin)


def _owner_admin(admin: RegistryAdmin) -> RegistryAdmin | None:
    """``admin`` if its key owns the contracts; None (with a warning) if ownership went elsewhere."""
    if admin.is_owner():
        return admin
    log.warning(
        "The owner key %s does not own the registry (its owner is %s): owner operations are unavailable; "
        "set CHAIN_OWNER_KEY_FILE to the owner's key file.",
        admin.address,
        admin.owner(),
    )
    return None


def open_chain(settings: Settings) -> ChainConnection:
    """Connect to the configured chain; embedded: start (or attach to) anvil and deploy if needed."""
    if settings.rpc_url:
        return _external(settings)

    directory = chain_dir(settings)
    node = AnvilNode(directory, binary=settings.anvil_binary, port=settings.anvil_port)
    url = node.start()
    try:
        w3 = connect(url)
        first = _first_initialisation(directory)
        owner = load_owner_account(settings) or embedded_key(directory, OWNER_KEY, create=first)
        operator = load_chain_account(settings) or embedded_key(directory, OPERATOR_KEY, create=first)
        if operator is None:
            raise ConfigurationError(
                f"The operator key {directory / OPERATOR_KEY} is missing: put it back, or set CHAIN_KEY_FILE."
            )
        fund_dev_accounts(w3, *(a.address for a in (owner, operator) if a is not None))
        sender = TxSender(w3, operator)
        admin_sender: TxSender | None = None
        if owner is not None:
            admin_sender = sender if owner.address == operator.address else TxSender(w3, owner)
        saved = directory / "deployment.json"
        redeployed = False
        deployment = json.loads(saved.read_text()) if saved.exists() else {}
        if deployment.get("registry_address"):
            reason = _stale_reason(w3, deployment)
            if reason is not None:
                log.warning("Deploying the contracts again: %s.", reason)
                deployment, redeployed = {}, True
        if not deployment.get("registry_address") or not deployment.get("nft_address"):
            if admin_sender is None:
                raise ConfigurationError(_NO_DEPLOYER.format(directory / OWNER_KEY))
            deployment = _deploy_all(admin_sender, operator.address, settings, directory)
        registry_address, nft_address = str(deployment["registry_address"]), str(deployment["nft_address"])
        registry = Web3Registry(w3, registry_address, operator, rpc_url=url, sender=sender)
        nft = Web3Nft(w3, nft_address, sender, timeout_s=settings.tx_timeout_s)
        admin = None
        if owner is not None:
            admin = _owner_admin(
                RegistryAdmin(w3, registry_address, nft_address, owner, settings.tx_timeout_s, sender=admin_sender)
            )
        if admin is not None:
            # The hot key may have changed since the deployment (CHAIN_KEY_FILE): the owner makes
            # the current one writer and minter.
            admin.ensure_writer(operator.address)
        return ChainConnection(registry, nft, node, settings, redeployed, admin, deployer=admin_sender)
    except BaseException:
        node.stop()
        raise
