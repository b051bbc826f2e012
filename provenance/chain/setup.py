"""Open the chain the settings describe: the embedded anvil, or a public RPC.

Embedded: anvil runs from the data dir; the service's chain key is created there (0600) and
funded with anvil's ``anvil_setBalance``; the registry and the NFT contract are deployed on first
start and their addresses saved in ``chain/deployment.json``. If the saved registry has no code
(the dev chain was reset), both are deployed again and the caller is told, so it can re-anchor
every record; ``ChainConnection.redeploy`` does the same while the service runs.

External (``RPC_URL``): the key comes from ``CHAIN_PRIVATE_KEY`` or ``CHAIN_KEY_FILE``, the
addresses from ``REGISTRY_ADDRESS`` and ``NFT_ADDRESS``; ``provenance chain deploy`` deploys both.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from provenance.chain.anvil import AnvilNode
from provenance.chain.artifacts import load_artifact
from provenance.chain.nft import Web3Nft, deploy_nft
from provenance.chain.registry import REGISTRY, Web3Registry, connect, load_account
from provenance.chain.transactions import TxSender
from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic, write_private


@dataclass
class ChainConnection:
    registry: Web3Registry
    nft: Web3Nft | None
    node: AnvilNode | None
    settings: Settings
    redeployed: bool = False

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()

    def redeploy(self) -> None:
        """Embedded chain only: deploy both contracts again and point the clients at them."""
        if self.node is None or self.registry.sender is None:
            raise ConfigurationError(
                "The registry is missing on an external chain: check RPC_URL and REGISTRY_ADDRESS."
            )
        sender = self.registry.sender
        self.registry.w3.provider.make_request("anvil_setBalance", [sender.address, hex(10**22)])  # type: ignore[arg-type]
        sender.resync()
        registry_address, nft_address = _deploy_all(sender, self.settings, chain_dir(self.settings))
        self.registry.rebind(registry_address)
        self.nft = Web3Nft(self.registry.w3, nft_address, self.registry.sender, timeout_s=self.settings.tx_timeout_s)
        self.redeployed = True


def chain_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "chain"


def load_chain_account(settings: Settings) -> LocalAccount | None:
    """The configured key: environment variable first, then key file."""
    if settings.chain_private_key:
        return load_account(settings.chain_private_key)
    if settings.chain_key_file is not None:
        try:
            return load_account(settings.chain_key_file.read_text())
        except OSError as exc:
            raise ConfigurationError(f"Cannot read CHAIN_KEY_FILE: {exc}") from None
    return None


def _embedded_account(directory: Path) -> LocalAccount:
    path = directory / "operator.key"
    if not path.exists():
        write_private(path, ("0x" + secrets.token_hex(32)).encode())
    account = load_account(path.read_text())
    assert account is not None
    return account


def deploy_contracts(sender: TxSender, royalty_bps: int, timeout_s: float = 120.0) -> dict[str, object]:
    """Deploy the registry, then the NFT contract bound to it; royalties go to the deployer."""
    registry_address, registry_block = sender.deploy(load_artifact(REGISTRY), timeout_s=timeout_s)
    nft_address, nft_block = deploy_nft(sender, registry_address, sender.address, royalty_bps)
    return {
        "chain_id": sender.chain_id,
        "registry_address": registry_address,
        "registry_block": registry_block,
        "nft_address": nft_address,
        "nft_block": nft_block,
    }


def _deploy_all(sender: TxSender, settings: Settings, directory: Path) -> tuple[str, str]:
    deployment = deploy_contracts(sender, settings.nft_royalty_bps, settings.tx_timeout_s)
    write_atomic(directory / "deployment.json", json.dumps(deployment, indent=1).encode())
    return str(deployment["registry_address"]), str(deployment["nft_address"])


def open_chain(settings: Settings) -> ChainConnection:
    if settings.rpc_url:
        w3 = connect(settings.rpc_url, settings.tx_timeout_s)
        if not settings.registry_address:
            raise ConfigurationError(
                "RPC_URL is set but REGISTRY_ADDRESS is not: deploy with `provenance chain deploy` and set it."
            )
        account = load_chain_account(settings)
        sender = TxSender(w3, account) if account is not None else None
        registry = Web3Registry(w3, settings.registry_address, account, rpc_url=settings.rpc_url, sender=sender)
        if not registry.is_deployed():
            raise ConfigurationError(
                f"No contract at REGISTRY_ADDRESS {registry.address} on chain {registry.chain_id}."
            )
        nft = (
            Web3Nft(w3, settings.nft_address, sender, timeout_s=settings.tx_timeout_s) if settings.nft_address else None
        )
        return ChainConnection(registry=registry, nft=nft, node=None, settings=settings)

    directory = chain_dir(settings)
    node = AnvilNode(directory, binary=settings.anvil_binary, port=settings.anvil_port)
    url = node.start()
    try:
        w3 = connect(url)
        account = load_chain_account(settings) or _embedded_account(directory)
        if w3.eth.get_balance(account.address) < 10**20:
            w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
        sender = TxSender(w3, account)
        saved = directory / "deployment.json"
        redeployed = False
        deployment = json.loads(saved.read_text()) if saved.exists() else {}
        registry_address, nft_address = deployment.get("registry_address"), deployment.get("nft_address")
        if registry_address and len(w3.eth.get_code(Web3.to_checksum_address(registry_address))) == 0:
            registry_address, redeployed = None, True
        if not registry_address or not nft_address:
            registry_address, nft_address = _deploy_all(sender, settings, directory)
        registry = Web3Registry(w3, registry_address, account, rpc_url=url, sender=sender)
        nft = Web3Nft(w3, nft_address, sender, timeout_s=settings.tx_timeout_s)
        return ChainConnection(registry, nft, node, settings, redeployed)
    except BaseException:
        node.stop()
        raise
