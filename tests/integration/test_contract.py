"""Stage 7: the registry contract, its reproducible artifact, and its rules, on anvil."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from eth_account import Account
from web3.exceptions import ContractLogicError

from provenance.chain.artifacts import ARTIFACTS_DIR, artifact_names
from provenance.chain.registry import Web3Registry, deploy_registry
from provenance.runtime.services import Services

ROOT = Path(__file__).resolve().parents[2]


def test_artifact_is_reproduced_by_the_compile_script(tmp_path: Path) -> None:
    subprocess.run(["node", "contracts/compile.js", str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    assert artifact_names() == ["ProvenanceNFT", "ProvenanceRegistry", "RoyaltySplitter"]
    for name in artifact_names():
        committed = ARTIFACTS_DIR / f"{name}.json"
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), committed.name
    artifact = json.loads((ARTIFACTS_DIR / "ProvenanceRegistry.json").read_text())
    assert artifact["compiler"]["version"].startswith("0.8.37")


@pytest.fixture(scope="module")
def registry(services: Services) -> Web3Registry:
    """A fresh registry deployed by the service's chain account on the session's anvil."""
    reg = services.chain.registry
    assert reg.account is not None
    address, _ = deploy_registry(reg.w3, reg.account)
    return Web3Registry(reg.w3, address, reg.account, rpc_url=reg.rpc_url)


def test_register_lookup_and_event(registry: Web3Registry) -> None:
    digest = "11" * 32
    assert registry.lookup(digest).registered is False
    tx = registry.submit(digest, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    receipt = registry.w3.eth.wait_for_transaction_receipt(tx)
    entry = registry.lookup(digest)
    assert (
        entry.registered
        and entry.block_number == receipt["blockNumber"]
        and entry.registrant == registry.account.address
    )
    assert entry.cid == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    events = registry.contract.events.Registered().process_receipt(receipt)
    assert len(events) == 1 and events[0]["args"]["contentHash"] == bytes.fromhex(digest)
    assert registry.contract.functions.count().call() == 1


def test_duplicates_are_refused(registry: Web3Registry) -> None:
    digest = "22" * 32
    registry.w3.eth.wait_for_transaction_receipt(registry.submit(digest, "bafkreiaaa"))
    with pytest.raises(ContractLogicError):
        registry.contract.functions.register(bytes.fromhex(digest), "bafkreibbb").call(
            {"from": registry.account.address}
        )


def test_unauthorized_writers_are_refused_until_allowed(registry: Web3Registry) -> None:
    w3 = registry.w3
    stranger = Account.create()
    w3.provider.make_request("anvil_setBalance", [stranger.address, hex(10**20)])
    call = registry.contract.functions.register(bytes.fromhex("33" * 32), "bafkreiccc")
    with pytest.raises(ContractLogicError, match=r"NotWriter|0x"):
        call.call({"from": stranger.address})
    with pytest.raises(ContractLogicError):  # only the owner manages writers
        registry.contract.functions.setWriter(stranger.address, True).call({"from": stranger.address})
    tx = registry.contract.functions.setWriter(stranger.address, True).build_transaction(
        {"from": registry.account.address, "nonce": w3.eth.get_transaction_count(registry.account.address)}
    )
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(registry.account.sign_transaction(tx).raw_transaction)
    )
    call.call({"from": stranger.address})  # now allowed: no revert


def test_empty_hash_and_cid_are_refused(registry: Web3Registry) -> None:
    with pytest.raises(ContractLogicError):
        registry.contract.functions.register(bytes(32), "bafkrei").call({"from": registry.account.address})
    with pytest.raises(ContractLogicError):
        registry.contract.functions.register(bytes.fromhex("44" * 32), "").call({"from": registry.account.address})
