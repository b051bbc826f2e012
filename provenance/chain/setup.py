"""Open the chain the settings describe: the embedded anvil, or a public RPC.

Embedded: anvil runs from the data dir; the service's chain key is created there (0600) and
funded with anvil's ``anvil_setBalance``; the registry is deployed on first start and its address
saved in ``chain/deployment.json``. If the saved address has no code (the dev chain was reset),
the registry is deployed again and the caller is told so it can re-anchor every record.

External (``RPC_URL``): the key comes from ``CHAIN_PRIVATE_KEY`` or ``CHAIN_KEY_FILE`` and the
address from ``REGISTRY_ADDRESS``; ``provenance chain deploy`` deploys one.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from provenance.chain.anvil import AnvilNode
from provenance.chain.registry import Web3Registry, connect, deploy_registry, load_account
from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic, write_private


@dataclass
class ChainConnection:
    registry: Web3Registry
    node: AnvilNode | None
    redeployed: bool = False

    def close(self) -> None:
        if self.node is not None:
            self.node.stop()


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


def open_chain(settings: Settings) -> ChainConnection:
    if settings.rpc_url:
        w3 = connect(settings.rpc_url, settings.tx_timeout_s)
        if not settings.registry_address:
            raise ConfigurationError(
                "RPC_URL is set but REGISTRY_ADDRESS is not: deploy with `provenance chain deploy` and set it."
            )
        registry = Web3Registry(w3, settings.registry_address, load_chain_account(settings), rpc_url=settings.rpc_url)
        if not registry.is_deployed():
            raise ConfigurationError(
                f"No contract at REGISTRY_ADDRESS {registry.address} on chain {registry.chain_id}."
            )
        return ChainConnection(registry=registry, node=None)

    directory = chain_dir(settings)
    node = AnvilNode(directory, binary=settings.anvil_binary, port=settings.anvil_port)
    url = node.start()
    try:
        w3 = connect(url)
        account = load_chain_account(settings) or _embedded_account(directory)
        if w3.eth.get_balance(account.address) < 10**20:
            w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
        deployment = directory / "deployment.json"
        address, redeployed = None, False
        if deployment.exists():
            address = json.loads(deployment.read_text())["registry_address"]
            if len(w3.eth.get_code(address)) == 0:
                address, redeployed = None, True
        if address is None:
            address, block = deploy_registry(w3, account)
            write_atomic(deployment, json.dumps({"registry_address": address, "deploy_block": block}).encode())
        return ChainConnection(Web3Registry(w3, address, account, rpc_url=url), node, redeployed)
    except BaseException:
        node.stop()
        raise
