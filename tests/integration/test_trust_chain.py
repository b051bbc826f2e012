"""The on-chain trust root: owner-published writers, signing keys and C2PA anchors, on a real anvil.

A verifier pins the chain id and the registry address; everything else it trusts is what the
registry's owner published: writers and signing keys with the blocks in which they were valid,
and the C2PA trust anchors' fingerprints. Only the owner (not the hot key) can change any of it,
and ownership moves in two steps.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from provenance.chain import KeyStatus
from provenance.chain.admin import RegistryAdmin
from provenance.chain.anvil import AnvilNode, free_port
from provenance.chain.artifacts import artifact_code_hash, load_artifact
from provenance.chain.nft import NFT, Web3Nft
from provenance.chain.reader import RegistryReader
from provenance.chain.registry import REGISTRY, Web3Registry, connect
from provenance.chain.setup import deploy_contracts, open_chain
from provenance.chain.transactions import TxSender
from provenance.config import Settings
from provenance.errors import ChainError

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "provenance.cli"]


@dataclass
class Deployed:
    w3: Web3
    url: str
    owner: LocalAccount
    operator: LocalAccount
    admin: RegistryAdmin  # the owner's
    hot: RegistryAdmin  # the same operations attempted with the hot key
    registry: Web3Registry  # the hot key's client, as the service holds it
    nft: Web3Nft
    reader: RegistryReader


def fund(w3: Web3, *accounts: LocalAccount) -> None:
    for account in accounts:
        w3.provider.make_request("anvil_setBalance", [account.address, hex(10**21)])  # type: ignore[arg-type]


def mine(w3: Web3, blocks: int) -> None:
    for _ in range(blocks):
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def deploy(w3: Web3, url: str) -> Deployed:
    """Fresh contracts: a new owner key deploys and owns, a new hot key writes and mints."""
    owner, operator = Account.create(), Account.create()
    fund(w3, owner, operator)
    deployment = deploy_contracts(TxSender(w3, owner), 500, writer=operator.address)
    registry_address, nft_address = deployment["registry_address"], deployment["nft_address"]
    sender = TxSender(w3, operator)
    return Deployed(
        w3=w3,
        url=url,
        owner=owner,
        operator=operator,
        admin=RegistryAdmin(w3, registry_address, nft_address, owner),
        hot=RegistryAdmin(w3, registry_address, nft_address, operator, sender=sender),
        registry=Web3Registry(w3, registry_address, operator, rpc_url=url, sender=sender),
        nft=Web3Nft(w3, nft_address, sender),
        reader=RegistryReader(url, registry_address),
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Web3, str]]:
    node = AnvilNode(tmp_path_factory.mktemp("trust-chain"))
    url = node.start()
    yield connect(url), url
    node.stop()


@pytest.fixture(scope="module")
def deployed(chain: tuple[Web3, str]) -> Deployed:
    return deploy(*chain)


def receipt_events(d: Deployed, tx_hash: str, event: str) -> list:
    receipt = d.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return list(getattr(d.admin.registry.events, event)().process_receipt(receipt))


def test_roles_after_deployment(deployed: Deployed) -> None:
    d = deployed
    assert d.reader.owner() == d.owner.address and d.nft.owner() == d.owner.address
    assert d.reader.pending_owner() is None
    assert d.reader.is_writer(d.operator.address) and not d.reader.is_writer(d.owner.address)
    assert d.reader.writers() == [d.operator.address]
    assert d.nft.is_minter(d.operator.address) and not d.nft.is_minter(d.owner.address)
    assert d.admin.is_owner() and not d.hot.is_owner()
    # The deployed code is the committed artifact byte for byte (the registry has no immutables).
    assert d.reader.code_hash() == artifact_code_hash(REGISTRY)
    assert d.reader.chain_id() == 31337 and d.reader.has_code()


def test_signing_key_is_valid_from_publication_until_revocation(deployed: Deployed) -> None:
    d = deployed
    key_id = os.urandom(32).hex()
    assert d.reader.key_status(key_id) == KeyStatus(published=False)
    assert not d.reader.key_valid_at(key_id, d.w3.eth.block_number)

    tx_hash, published = d.admin.publish_key(key_id)
    (event,) = receipt_events(d, tx_hash, "KeyPublished")
    assert event["args"]["keyId"] == bytes.fromhex(key_id) and event["args"]["blockNumber"] == published
    assert d.reader.key_status(key_id) == KeyStatus(True, published, None)
    assert not d.reader.key_valid_at(key_id, published - 1), "not valid before it was published"
    assert d.reader.key_valid_at(key_id, published) and d.reader.key_valid_at(key_id, published + 1000)

    mine(d.w3, 3)
    tx_hash, revoked = d.admin.revoke_key("0x" + key_id)  # with or without 0x
    (event,) = receipt_events(d, tx_hash, "KeyRevoked")
    assert event["args"]["blockNumber"] == revoked and revoked >= published + 4
    assert d.registry.key_status(key_id) == KeyStatus(True, published, revoked)
    assert not d.registry.key_valid_at(key_id, published - 1)
    assert d.registry.key_valid_at(key_id, published) and d.registry.key_valid_at(key_id, revoked - 1)
    assert not d.registry.key_valid_at(key_id, revoked), "not valid from the revocation block on"
    assert not d.registry.key_valid_at(key_id, revoked + 1000)

    with pytest.raises(ChainError, match="already published"):
        d.admin.publish_key(key_id)  # a revoked key never comes back
    with pytest.raises(ChainError, match="already revoked"):
        d.admin.revoke_key(key_id)
    with pytest.raises(ChainError, match="never published"):
        d.admin.revoke_key(os.urandom(32).hex())
    assert d.admin.ensure_key_published(key_id) is False

    fresh = os.urandom(32).hex()
    assert d.admin.ensure_key_published(fresh) is True
    assert d.admin.ensure_key_published(fresh) is False
    assert d.reader.key_status(fresh).published


def test_writer_block_ranges(deployed: Deployed) -> None:
    d = deployed
    extra = Account.create()
    fund(d.w3, extra)
    _, allowed = d.admin.set_writer(extra.address, True)
    mine(d.w3, 2)
    _, removed = d.admin.set_writer(extra.address, False)
    mine(d.w3, 2)
    _, again = d.admin.set_writer(extra.address, True)
    at = d.reader.writer_at
    assert not at(extra.address, allowed - 1)
    assert at(extra.address, allowed) and at(extra.address, removed - 1)
    assert not at(extra.address, removed) and not at(extra.address, again - 1)
    assert at(extra.address, again) and at(extra.address, again + 1000)
    assert d.registry.writer_at(extra.address, allowed), "the first range survives the second"
    assert d.reader.is_writer(extra.address) and extra.address in d.reader.writers()
    assert d.reader.writer_at(d.operator.address, d.w3.eth.block_number)

    writer = Web3Registry(d.w3, d.registry.address, extra, rpc_url=d.url)
    d.w3.eth.wait_for_transaction_receipt(writer.submit(os.urandom(32).hex(), "bafkreiwriter"))
    d.admin.set_writer(extra.address, False)
    assert extra.address not in d.reader.writers()
    with pytest.raises(ChainError, match="not an allowed writer"):
        writer.submit(os.urandom(32).hex(), "bafkreiwriter")


def test_trust_anchors(deployed: Deployed) -> None:
    d = deployed
    first, second = os.urandom(32).hex(), os.urandom(32).hex()
    tx_hash, block = d.admin.add_trust_anchor(first)
    (event,) = receipt_events(d, tx_hash, "TrustAnchorAdded")
    assert event["args"]["fingerprint"] == bytes.fromhex(first) and event["args"]["blockNumber"] == block
    assert d.admin.ensure_trust_anchor(second) is True and d.admin.ensure_trust_anchor(second) is False
    assert d.reader.is_trust_anchor(first) and d.registry.is_trust_anchor(second)
    assert {first, second} <= set(d.reader.trust_anchors())
    with pytest.raises(ChainError, match="already on the registry"):
        d.admin.add_trust_anchor(first)

    tx_hash, _ = d.admin.remove_trust_anchor(first)
    assert len(receipt_events(d, tx_hash, "TrustAnchorRemoved")) == 1
    assert not d.reader.is_trust_anchor(first) and first not in d.reader.trust_anchors()
    assert second in d.registry.trust_anchors()
    with pytest.raises(ChainError, match="not on the registry"):
        d.admin.remove_trust_anchor(first)


def test_only_the_owner_changes_the_trust_root(deployed: Deployed) -> None:
    d = deployed
    stranger = Account.create().address
    anchor = os.urandom(32).hex()
    d.admin.add_trust_anchor(anchor)
    key_id = os.urandom(32).hex()
    d.admin.publish_key(key_id)
    attempts = [
        lambda: d.hot.set_writer(stranger, True),
        lambda: d.hot.publish_key(os.urandom(32).hex()),
        lambda: d.hot.revoke_key(key_id),
        lambda: d.hot.add_trust_anchor(os.urandom(32).hex()),
        lambda: d.hot.remove_trust_anchor(anchor),
    ]
    for attempt in attempts:
        with pytest.raises(ChainError, match=f"only the registry owner can do this \\({d.operator.address}"):
            attempt()
    with pytest.raises(ChainError, match="only the NFT contract owner can do this"):
        d.hot.set_minter(stranger, True)
    with pytest.raises(ChainError, match="only the registry owner"):
        d.hot.transfer_ownership(d.operator.address)
    with pytest.raises(ChainError, match="without an owner"):  # renouncing would freeze the trust root
        d.admin.sender.call_and_wait(d.admin.registry.functions.renounceOwnership(), label="registry")
    assert not d.reader.is_writer(stranger) and d.reader.is_trust_anchor(anchor)
    assert d.reader.key_status(key_id).revoked_at is None and not d.nft.is_minter(stranger)

    # The owner can do all of it, including minters.
    d.admin.set_minter(stranger, True)
    assert d.nft.is_minter(stranger)
    d.admin.set_minter(stranger, False)
    assert not d.nft.is_minter(stranger)


def test_ownership_moves_in_two_steps(chain: tuple[Web3, str]) -> None:
    d = deploy(*chain)  # its own contracts: the owner changes here
    successor, stranger = Account.create(), Account.create()
    fund(d.w3, successor, stranger)
    new_admin = RegistryAdmin(d.w3, d.admin.registry_address, d.admin.nft_address, successor)

    receipts = d.admin.transfer_ownership(successor.address)
    assert len(receipts) == 2  # the registry and the NFT contract
    started = d.admin.registry.events.OwnershipTransferStarted().process_receipt(
        d.w3.eth.get_transaction_receipt(receipts[0][0])  # type: ignore[arg-type]
    )
    assert started[0]["args"]["newOwner"] == successor.address
    assert d.reader.pending_owner() == successor.address and d.admin.pending_owner() == successor.address
    assert d.reader.owner() == d.owner.address, "nothing changes before the new owner accepts"
    d.admin.set_writer(stranger.address, True)  # the old owner is still in charge
    with pytest.raises(ChainError, match="No ownership transfer"):
        RegistryAdmin(d.w3, d.admin.registry_address, d.admin.nft_address, stranger).accept_ownership()

    assert len(new_admin.accept_ownership()) == 2
    assert d.reader.owner() == successor.address and d.nft.owner() == successor.address
    assert d.reader.pending_owner() is None and new_admin.is_owner() and not d.admin.is_owner()

    with pytest.raises(ChainError, match="only the registry owner can do this"):
        d.admin.set_writer(stranger.address, False)
    with pytest.raises(ChainError, match="only the NFT contract owner can do this"):
        d.admin.set_minter(stranger.address, True)
    with pytest.raises(ChainError, match="only the registry owner"):
        d.admin.publish_key(os.urandom(32).hex())
    new_admin.set_writer(stranger.address, False)
    assert not d.reader.is_writer(stranger.address)
    new_admin.set_minter(stranger.address, True)
    assert d.nft.is_minter(stranger.address)


def test_trust_history_from_the_events(chain: tuple[Web3, str]) -> None:
    w3, url = chain
    mine(w3, 3)  # not deployed in block 0: the search for the deployment block has work to do
    other = deploy(w3, url)  # a second registry on the same chain: its events are not ours
    other.admin.publish_key(os.urandom(32).hex())
    d = deploy(w3, url)
    extra = Account.create().address
    _, allowed = d.admin.set_writer(extra, True)
    _, removed = d.admin.set_writer(extra, False)
    _, again = d.admin.set_writer(extra, True)
    key_id = os.urandom(32).hex()
    _, published = d.admin.publish_key(key_id)
    _, revoked = d.admin.revoke_key(key_id)
    anchor = os.urandom(32).hex()
    _, added = d.admin.add_trust_anchor(anchor)
    _, dropped = d.admin.remove_trust_anchor(anchor)

    latest = w3.eth.block_number
    start = d.reader.deployment_block(latest)
    assert d.reader.code_at(start) and not d.reader.code_at(start - 1)
    history = d.reader.trust_history()
    assert history.from_block == start and history.to_block == latest
    assert history.writers == {d.operator.address: [(start, None)], extra: [(allowed, removed), (again, None)]}
    assert history.keys == {key_id: (published, revoked)}
    assert history.anchors == {anchor: [(added, dropped)]}
    # Read at an earlier block, the later changes are not there yet.
    assert d.reader.at(published).trust_history().keys == {key_id: (published, None)}
    assert d.reader.at(published).key_status(key_id).revoked_at is None


def test_reader_errors(deployed: Deployed) -> None:
    dead = RegistryReader(f"http://127.0.0.1:{free_port()}", deployed.registry.address, timeout_s=2)
    with pytest.raises(ChainError, match="did not answer"):
        dead.lookup("11" * 32)
    with pytest.raises(ChainError):
        dead.chain_id()
    empty = RegistryReader(deployed.url, "0x" + "42" * 20)
    assert not empty.has_code()
    with pytest.raises(ChainError, match="Unexpected answer"):
        empty.owner()


# --- the embedded default -----------------------------------------------------------------------


def test_embedded_chain_keeps_two_private_keys(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    conn = open_chain(settings)
    try:
        directory = tmp_path / "data" / "chain"
        for name in ("owner.key", "operator.key"):
            assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
        owner = Account.from_key((directory / "owner.key").read_text().strip())
        operator = Account.from_key((directory / "operator.key").read_text().strip())
        assert owner.address != operator.address
        assert conn.admin is not None and conn.admin.address == owner.address
        assert conn.registry.account is not None and conn.registry.account.address == operator.address
        assert conn.registry.owner() == owner.address and conn.nft is not None and conn.nft.owner() == owner.address
        assert conn.registry.is_writer(operator.address) and not conn.registry.is_writer(owner.address)
        assert conn.nft.is_minter(operator.address) and not conn.nft.is_minter(owner.address)
        deployment = json.loads((directory / "deployment.json").read_text())
        assert deployment["owner"] == owner.address and deployment["writer"] == operator.address
        assert deployment["registry_code_hash"] == artifact_code_hash(REGISTRY)
        assert deployment["nft_code_hash"] == artifact_code_hash(NFT)
    finally:
        conn.close()


def test_embedded_chain_redeploys_when_the_artifact_changed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    saved = tmp_path / "data" / "chain" / "deployment.json"
    conn = open_chain(settings)
    first = conn.registry.address
    # The code on chain is no longer what provenance/chain/compiled holds (as after a contract change).
    changed = load_artifact(REGISTRY)["deployedBytecode"][:-2] + "00"
    conn.registry.w3.provider.make_request("anvil_setCode", [first, changed])  # type: ignore[arg-type]
    conn.close()

    conn = open_chain(settings)
    try:
        assert conn.redeployed and conn.registry.address != first
        assert conn.registry.reader.code_hash() == artifact_code_hash(REGISTRY)
        assert json.loads(saved.read_text())["registry_address"] == conn.registry.address
    finally:
        conn.close()
    conn = open_chain(settings)
    second = conn.registry.address
    conn.close()
    assert not conn.redeployed and second != first

    # An NFT artifact change cannot be seen in its code (immutables): the recorded hash tells.
    deployment = json.loads(saved.read_text())
    saved.write_text(json.dumps({**deployment, "nft_code_hash": "00" * 32}))
    conn = open_chain(settings)
    try:
        assert conn.redeployed and conn.registry.address != second
    finally:
        conn.close()


def test_redeploy_and_transferred_ownership_on_the_embedded_chain(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    conn = open_chain(settings)
    try:
        assert conn.admin is not None
        successor = Account.create()
        fund(conn.registry.w3, successor)
        conn.admin.transfer_ownership(successor.address)
        RegistryAdmin(conn.registry.w3, conn.registry.address, conn.nft.address, successor).accept_ownership()  # type: ignore[union-attr]
    finally:
        conn.close()
    conn = open_chain(settings)  # owner.key no longer owns the contracts: no admin, but the service runs
    try:
        assert conn.admin is None and conn.registry.owner() == successor.address
        old = conn.registry.address
        conn.redeploy()  # a reset dev chain: fresh contracts belong to the data dir's owner key again
        assert conn.registry.address != old and conn.admin is not None and conn.admin.is_owner()
        assert conn.registry.is_writer(conn.registry.account.address)  # type: ignore[union-attr]
        assert conn.nft is not None and conn.nft.is_minter(conn.registry.account.address)  # type: ignore[union-attr]
        conn.admin.publish_key("ab" * 32)
        assert conn.registry.key_status("ab" * 32).published
    finally:
        conn.close()


# --- the CLI ----------------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})}
    )


def test_cli_writers_and_two_step_ownership(tmp_path: Path) -> None:
    data = tmp_path / "data"
    conn = open_chain(Settings(data_dir=data))  # keeps anvil running: the CLI attaches to it
    try:
        reader = conn.registry.reader
        extra = Account.create().address
        done = run_cli("chain", "set-writer", extra, "--allow", "--data-dir", str(data), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert reader.is_writer(extra)
        bad = run_cli("chain", "transfer-ownership", "nobody", "--data-dir", str(data), cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.startswith("error:") and "not an address" in bad.stderr

        successor = Account.create()
        key_file = tmp_path / "new-owner.key"
        key_file.write_text(successor.key.hex())
        key_file.chmod(0o600)
        started = run_cli("chain", "transfer-ownership", successor.address, "--data-dir", str(data), cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        assert reader.pending_owner() == successor.address and reader.owner() == conn.admin.address  # type: ignore[union-attr]
        accepted = run_cli(
            "chain", "accept-ownership", "--key-file", str(key_file), "--data-dir", str(data), cwd=tmp_path
        )
        assert accepted.returncode == 0, accepted.stderr
        assert reader.owner() == successor.address and conn.nft.owner() == successor.address  # type: ignore[union-attr]

        # The data dir's owner key is not the owner any more; the new owner's key file is.
        refused = run_cli("chain", "set-writer", extra, "--revoke", "--data-dir", str(data), cwd=tmp_path)
        assert refused.returncode == 2 and "owner key" in refused.stderr
        revoked = run_cli(
            "chain",
            "set-writer",
            extra,
            "--revoke",
            "--data-dir",
            str(data),
            cwd=tmp_path,
            env={"CHAIN_OWNER_KEY_FILE": str(key_file)},
        )
        assert revoked.returncode == 0, revoked.stderr
        assert not reader.is_writer(extra)
    finally:
        conn.close()


def test_cli_deploy_separates_owner_and_writer(tmp_path: Path) -> None:
    node = AnvilNode(tmp_path / "external-chain")
    url = node.start()
    try:
        owner, hot = Account.create(), Account.create()
        for account in (owner, hot):
            httpx.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "anvil_setBalance",
                    "params": [account.address, "0x" + "f" * 20],
                },
            )
        owner_file, hot_file = tmp_path / "owner.key", tmp_path / "hot.key"
        owner_file.write_text(owner.key.hex())
        hot_file.write_text(hot.key.hex())
        deployed = run_cli(
            "chain",
            "deploy",
            "--rpc-url",
            url,
            "--data-dir",
            str(tmp_path / "ops"),
            cwd=tmp_path,
            env={"CHAIN_OWNER_KEY_FILE": str(owner_file), "CHAIN_KEY_FILE": str(hot_file)},
        )
        assert deployed.returncode == 0, deployed.stderr
        logged = json.loads((tmp_path / "ops" / "chain" / "deployments.jsonl").read_text())
        assert logged["owner"] == owner.address and logged["writer"] == hot.address
        reader = RegistryReader(url, logged["registry_address"])
        assert reader.owner() == owner.address and reader.writers() == [hot.address]

        # The service on that chain: the hot key writes, the owner key (if given) administers.
        settings = Settings(
            data_dir=tmp_path / "svc",
            rpc_url=url,
            chain_key_file=hot_file,
            chain_owner_key_file=owner_file,
            registry_address=logged["registry_address"],
            nft_address=logged["nft_address"],
        )
        conn = open_chain(settings)
        assert conn.admin is not None and conn.admin.address == owner.address and conn.admin.is_owner()
        without_owner = open_chain(settings.model_copy(update={"chain_owner_key_file": None}))
        assert without_owner.admin is None

        explicit = run_cli(
            "chain",
            "deploy",
            "--rpc-url",
            url,
            "--key-file",
            str(owner_file),
            "--writer",
            "0x" + "12" * 20,
            "--data-dir",
            str(tmp_path / "ops"),
            cwd=tmp_path,
        )
        assert explicit.returncode == 0, explicit.stderr
        last = json.loads((tmp_path / "ops" / "chain" / "deployments.jsonl").read_text().splitlines()[-1])
        assert RegistryReader(url, last["registry_address"]).writers() == [Web3.to_checksum_address("0x" + "12" * 20)]
    finally:
        node.stop()
