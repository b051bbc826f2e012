"""Running against an external chain (RPC_URL + key + REGISTRY_ADDRESS), as on a public testnet.

A public testnet cannot be reached here, so a separate anvil process plays that role: it speaks
the same JSON-RPC, and the service treats it exactly as it would treat Sepolia.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from provenance.chain.anvil import AnvilNode
from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for


@pytest.fixture
def external_rpc(tmp_path: Path):  # type: ignore[no-untyped-def]
    node = AnvilNode(tmp_path / "external-chain")
    url = node.start()
    yield url
    node.stop()


def test_deploy_with_the_cli_then_serve_against_the_rpc(tmp_path: Path, external_rpc: str) -> None:
    account = Account.create()
    import httpx

    httpx.post(
        external_rpc,
        json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance", "params": [account.address, hex(10**20)]},
    )
    key_file = tmp_path / "chain.key"
    key_file.write_text(account.key.hex())
    key_file.chmod(0o600)
    env = {**os.environ, "CHAIN_KEY_FILE": str(key_file)}
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "provenance.cli",
            "chain",
            "deploy",
            "--rpc-url",
            external_rpc,
            "--data-dir",
            str(tmp_path / "ops"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stderr
    address = re.search(r"REGISTRY_ADDRESS=(0x[0-9a-fA-F]{40})", deployed.stdout).group(1)  # type: ignore[union-attr]
    assert account.key.hex() not in deployed.stdout + deployed.stderr
    logged = json.loads((tmp_path / "ops" / "chain" / "deployments.jsonl").read_text())
    assert logged["registry_address"] == address and logged["chain_id"] == 31337
    nft_address = re.search(r"NFT_ADDRESS=(0x[0-9a-fA-F]{40})", deployed.stdout).group(1)  # type: ignore[union-attr]
    assert logged["nft_address"] == nft_address

    settings = Settings(
        data_dir=tmp_path / "data",
        rpc_url=external_rpc,
        chain_key_file=key_file,
        registry_address=address,
        nft_address=nft_address,
        anchor_poll_interval_s=0.05,
    )
    services = Services.open(settings)
    try:
        assert services.chain.node is None and services.chain.registry.address == address
        certified = services.certifier.certify(encode(photo("coffee.png")))
        wait_for(lambda: services.repository.get(certified.record.id).status == "registered")
        assert services.chain.registry.lookup(certified.record.sha256).registrant == account.address
        assert services.verifier.verify(certified.data).verdict == "authentic"
        assert not (tmp_path / "data" / "chain").exists(), "no embedded chain when RPC_URL is set"
        minted = services.nft.mint(certified.record.id, account.address)
        assert services.chain.nft.owner_of(int(minted.token_id, 16)) == account.address
    finally:
        services.close()


def test_missing_registry_address_is_a_clear_error(tmp_path: Path, external_rpc: str) -> None:
    with pytest.raises(ConfigurationError, match="provenance chain deploy"):
        Services.open(Settings(data_dir=tmp_path, rpc_url=external_rpc, chain_private_key="0x" + "11" * 32))


def test_wrong_registry_address_is_a_clear_error(tmp_path: Path, external_rpc: str) -> None:
    with pytest.raises(ConfigurationError, match="No contract"):
        Services.open(
            Settings(
                data_dir=tmp_path,
                rpc_url=external_rpc,
                chain_private_key="0x" + "11" * 32,
                registry_address="0x" + "22" * 20,
            )
        )
