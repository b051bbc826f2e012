"""Merkle-batched anchoring and chain robustness, on anvil."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from provenance.anchoring.merkle import MerkleTree, verify_proof
from provenance.config import Settings
from provenance.db.models import RecordStatus
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for


def small_images(count: int, seed: int = 0) -> list[bytes]:
    """Distinct 256x256 crops of a photo (distinct hashes, big enough for the watermark)."""
    rng = np.random.default_rng(seed)
    src = photo("astronaut.png")
    out = []
    for _ in range(count):
        y, x = rng.integers(0, src.shape[0] - 256, 2)
        out.append(encode(np.ascontiguousarray(src[y : y + 256, x : x + 256])))
    return out


def rpc(services: Services, method: str, *params: object) -> object:
    return services.chain.registry.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


@pytest.fixture
def batched(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", anchor_mode="batch", batch_max_items=4, batch_max_seconds=3.0)
    services = Services.open(settings, start_worker=False)
    yield services
    services.close()


def test_records_are_anchored_in_merkle_batches(batched: Services) -> None:
    certified = [batched.certifier.certify(data) for data in small_images(10)]
    batched.anchorer.run_once()  # two full batches of 4; 2 records wait for more or for time
    statuses = [batched.repository.get(c.record.id).status for c in certified]
    assert statuses.count(RecordStatus.REGISTERED) == 8 and statuses.count(RecordStatus.PENDING) == 2
    wait_for(
        lambda: (batched.anchorer.run_once(), batched.repository.get(certified[-1].record.id).status)[1] == "registered"
    )

    registry = batched.chain.registry
    roots = {batched.repository.get(c.record.id).batch_root for c in certified}
    assert len(roots) == 3 and registry.counts() == (0, 3), "three roots, no single registrations"
    for item in certified:
        record = batched.repository.get(item.record.id)
        assert record.tx_hash and record.block_number and record.merkle_proof is not None
        assert registry.is_registered(record.sha256, record.batch_root, record.merkle_proof)
        result = batched.verifier.verify(item.data)
        assert result.verdict == "authentic" and result.checks["chain"]["mode"] == "batch"
        assert result.checks["chain"]["proof_valid"] and result.checks["chain"]["registered"]
    # A proof for one record does not prove another hash.
    first = batched.repository.get(certified[0].record.id)
    assert not registry.is_registered("ab" * 32, first.batch_root, first.merkle_proof)


def test_published_leaves_rebuild_every_proof(batched: Services) -> None:
    certified = [batched.certifier.certify(data) for data in small_images(4, seed=1)]
    batched.anchorer.run_once()
    record = batched.repository.get(certified[0].record.id)
    batch = batched.repository.get_batch(record.batch_root)
    document = json.loads(batched.store.cat(batch.leaves_cid))
    assert document["format"] == "provenance-merkle-batch/1" and document["root"] == record.batch_root
    tree = MerkleTree.build([bytes.fromhex(h) for h in document["content_hashes"]])
    assert "0x" + tree.root.hex() == record.batch_root
    for item in certified:
        sha = bytes.fromhex(item.record.sha256)
        assert verify_proof(sha, tree.proof(sha), tree.root)
        assert ["0x" + p.hex() for p in tree.proof(sha)] == batched.repository.get(item.record.id).merkle_proof
    on_chain = batched.chain.registry.batch(record.batch_root)
    assert on_chain.anchored and on_chain.count == 4 and on_chain.leaves_cid == batch.leaves_cid


def test_confirmation_depth(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path / "data", confirmations=3), start_worker=False)
    try:
        record = services.certifier.certify(small_images(1, seed=2)[0]).record
        services.anchorer.run_once()
        assert services.repository.get(record.id).status == RecordStatus.SUBMITTED, "mined, 1 of 3 blocks"
        rpc(services, "anvil_mine", 1)
        services.anchorer.run_once()
        assert services.repository.get(record.id).status == RecordStatus.SUBMITTED, "2 of 3 blocks"
        rpc(services, "anvil_mine", 1)
        services.anchorer.run_once()
        assert services.repository.get(record.id).status == RecordStatus.REGISTERED
    finally:
        services.close()


def test_dropped_transaction_is_sent_again(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    try:
        rpc(services, "evm_setAutomine", False)
        record = services.certifier.certify(small_images(1, seed=3)[0]).record
        services.anchorer.run_once()
        first_tx = services.repository.get(record.id).tx_hash
        assert services.repository.get(record.id).status == RecordStatus.SUBMITTED
        rpc(services, "anvil_dropTransaction", first_tx)  # the mempool forgets it
        assert not services.chain.registry.is_known(first_tx)
        rpc(services, "evm_setAutomine", True)
        services.anchorer.run_once()  # unknown tx -> pending -> sent again (same nonce) -> mined
        stored = services.repository.get(record.id)
        assert stored.status == RecordStatus.REGISTERED
        assert services.chain.registry.outcome(stored.tx_hash).success
        assert services.chain.registry.counts()[0] == 1
    finally:
        services.close()


def test_concurrent_senders_never_reuse_a_nonce(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    try:
        registry = services.chain.registry
        hashes = [os.urandom(32).hex() for _ in range(24)]
        sent: list[str] = []
        errors: list[Exception] = []

        def send(digest: str) -> None:
            try:
                sent.append(registry.submit(digest, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(h,)) for h in hashes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(set(sent)) == 24
        for tx in sent:
            assert registry.w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
        assert all(registry.lookup(h).registered for h in hashes)
    finally:
        services.close()


def test_anvil_killed_mid_batch_loses_nothing_and_anchors_nothing_twice(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        anchor_mode="batch",
        batch_max_items=3,
        batch_max_seconds=0.2,
        anchor_poll_interval_s=0.05,
    )
    first = Services.open(settings)
    certified = [first.certifier.certify(data) for data in small_images(7, seed=4)]
    wait_for(lambda: first.repository.counts().get(RecordStatus.REGISTERED, 0) >= 3)
    node = first.chain.node
    assert node is not None and node.process is not None
    node.process.send_signal(signal.SIGKILL)  # no state dump on exit: the last second of blocks may be lost
    node.process.wait()
    node.process = None
    more = [first.certifier.certify(data) for data in small_images(2, seed=5)]  # certified while the chain is down
    first.close()

    second = Services.open(settings)
    try:
        everything = certified + more
        wait_for(lambda: all(second.repository.get(c.record.id).status == "registered" for c in everything), timeout=60)
        registry = second.chain.registry
        roots = {second.repository.get(c.record.id).batch_root for c in everything}
        assert None not in roots
        assert registry.counts()[1] == len(roots), "each batch anchored once"
        assert sum(second.repository.get_batch(r).count for r in roots) == len(everything), "each record in one batch"
        for item in everything:
            assert second.verifier.verify(item.data).verdict == "authentic"
    finally:
        second.close()


def test_reset_dev_chain_is_detected_and_repaired_while_running(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", anchor_poll_interval_s=0.05, chain_health_check_s=0.2)
    services = Services.open(settings)
    try:
        items = [services.certifier.certify(data) for data in small_images(2, seed=6)]
        wait_for(lambda: all(services.repository.get(i.record.id).status == "registered" for i in items))
        rpc(services, "anvil_reset")  # the dev chain starts over from genesis: no contracts, no balances
        assert not services.chain.registry.is_deployed()
        wait_for(lambda: services.chain.redeployed and services.chain.registry.is_deployed(), timeout=30)
        wait_for(lambda: all(services.verifier.verify(i.data).verdict == "authentic" for i in items), timeout=30)
        assert services.chain.registry.counts()[0] == 2
    finally:
        services.close()
