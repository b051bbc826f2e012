"""Anchoring survives crashes between any two steps, and a restart keeps everything."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from provenance.config import Settings
from provenance.db.models import RecordStatus
from provenance.services import Services
from tests.conftest import encode, photo, wait_for


@pytest.fixture
def stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A private embedded stack without the background worker, so each step is driven by hand."""
    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    yield services
    services.close()


def test_record_starts_pending_and_one_pass_registers_it(stack: Services) -> None:
    record = stack.certifier.certify(encode(photo("coffee.png"))).record
    assert stack.repository.get(record.id).status == RecordStatus.PENDING
    stack.anchorer.run_once()
    stored = stack.repository.get(record.id)
    assert stored.status == RecordStatus.REGISTERED and stored.tx_hash and stored.block_number
    assert stack.chain.registry.lookup(record.sha256).block_number == stored.block_number


def test_crash_after_sending_before_saving_sends_no_second_transaction(stack: Services) -> None:
    record = stack.certifier.certify(encode(photo("chelsea.png"))).record
    registry = stack.chain.registry
    # The process sent the transaction, then died before writing "submitted" to the database.
    registry.w3.eth.wait_for_transaction_receipt(registry.submit(record.sha256, record.cid))
    nonce_before = registry.next_nonce()
    stack.anchorer.run_once()
    assert stack.repository.get(record.id).status == RecordStatus.REGISTERED
    assert registry.next_nonce() == nonce_before, "no second transaction"
    assert registry.contract.functions.count().call() == 1


def test_submitted_transaction_the_node_never_saw_is_sent_again(stack: Services) -> None:
    record = stack.certifier.certify(encode(photo("rocket.jpg"))).record
    # Saved as submitted, then the node lost it (dropped from the mempool, or never sent).
    stack.repository.set_status(record.id, RecordStatus.SUBMITTED, tx_hash="0x" + "ab" * 32)
    stack.anchorer.run_once()  # confirm: unknown tx -> pending
    stack.anchorer.run_once()  # send again
    stored = stack.repository.get(record.id)
    assert stored.status == RecordStatus.REGISTERED and stored.tx_hash != "0x" + "ab" * 32


def test_restart_keeps_chain_state_and_registers_leftover_pending(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Services.open(Settings(data_dir=data_dir), start_worker=False)
    done = first.certifier.certify(encode(photo("astronaut.png")))
    first.anchorer.run_once()
    left = first.certifier.certify(encode(photo("motorcycle_left.png")))  # never anchored: "crash"
    address = first.chain.registry.address
    first.close()  # anvil dumps its state on the way out

    second = Services.open(Settings(data_dir=data_dir, anchor_poll_interval_s=0.05))
    try:
        assert second.chain.registry.address == address and not second.chain.redeployed
        assert second.verifier.verify(done.data).verdict == "authentic"
        wait_for(lambda: second.repository.get(left.record.id).status == RecordStatus.REGISTERED)
        assert second.verifier.verify(left.data).verdict == "authentic"
    finally:
        second.close()


def test_killed_anvil_loses_nothing(tmp_path: Path) -> None:
    """anvil killed hard (no state dump on exit): the periodic dump plus the database re-anchor."""
    data_dir = tmp_path / "data"
    first = Services.open(Settings(data_dir=data_dir), start_worker=False)
    certified = [first.certifier.certify(encode(photo(n))) for n in ("coffee.png", "chelsea.png")]
    first.anchorer.run_once()
    assert first.chain.node is not None and first.chain.node.process is not None
    first.chain.node.process.send_signal(signal.SIGKILL)
    first.chain.node.process.wait()
    first.chain.node.process = None
    first.close()

    second = Services.open(Settings(data_dir=data_dir, anchor_poll_interval_s=0.05))
    try:
        for item in certified:
            wait_for(lambda item=item: second.verifier.verify(item.data).verdict == "authentic")
        assert second.chain.registry.contract.functions.count().call() == len(certified)
    finally:
        second.close()
