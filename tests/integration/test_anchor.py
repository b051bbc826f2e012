"""Anchoring survives crashes between any two steps, and a restart keeps everything."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from provenance.chain.transactions import TxSender
from provenance.config import Settings
from provenance.db.models import RecordStatus
from provenance.errors import ChainError, ChainUnavailableError
from provenance.runtime.services import Services
from tests.conftest import _free_port, encode, photo, wait_for


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


# --- one writer, many transactions in flight, faults ------------------------------------------------


def small_png(seed: int, size: int = 64) -> bytes:
    """A unique small image (no mark below 256 px: quick to certify)."""
    return encode(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def rpc(services: Services, method: str, *params: object) -> object:
    return services.chain.registry.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]


def test_pending_records_go_out_together_with_consecutive_nonces(stack: Services) -> None:
    registry = stack.chain.registry
    first_nonce = registry.next_nonce()
    records = [stack.certifier.certify(small_png(i)).record for i in range(6)]
    stack.anchorer.run_once()  # one pass sends all six and collects their receipts
    stored = [stack.repository.get(r.id) for r in records]
    assert all(r.status == RecordStatus.REGISTERED for r in stored)
    nonces = sorted(int(registry.w3.eth.get_transaction(r.tx_hash)["nonce"]) for r in stored)
    assert nonces == list(range(first_nonce, first_nonce + 6))
    assert registry.counts() == (6, 0)


def test_a_backlog_is_anchored_as_a_merkle_batch(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path / "data", anchor_batch_backlog=10), start_worker=False)
    try:
        records = [services.certifier.certify(small_png(100 + i)).record for i in range(12)]
        services.anchorer.run_once()
        stored = [services.repository.get(r.id) for r in records]
        assert all(r.status == RecordStatus.REGISTERED and r.batch_root == stored[0].batch_root for r in stored)
        assert services.chain.registry.counts() == (0, 1), "one transaction for the whole backlog"
        assert all(services.verifier.verify(services.store.cat(r.cid)).verdict == "authentic" for r in stored[:2])
        # A few at a time go out one by one again.
        few = [services.certifier.certify(small_png(200 + i)).record for i in range(3)]
        services.anchorer.run_once()
        assert all(services.repository.get(r.id).batch_root is None for r in few)
        assert services.chain.registry.counts() == (3, 1)
    finally:
        services.close()


def test_a_stuck_transaction_is_replaced_with_a_higher_fee(tmp_path: Path) -> None:
    services = Services.open(Settings(data_dir=tmp_path / "data", tx_replace_after_s=0.5), start_worker=False)
    try:
        registry = services.chain.registry
        rpc(services, "evm_setAutomine", False)  # nothing is mined: the transaction waits in the pool
        record = services.certifier.certify(small_png(300)).record
        services.anchorer.run_once()
        first = services.repository.get(record.id)
        assert first.status == RecordStatus.SUBMITTED
        old = registry.w3.eth.get_transaction(first.tx_hash)
        services.anchorer.run_once()  # seen waiting: the clock starts
        time.sleep(0.6)
        services.anchorer.run_once()  # waited too long: same nonce, higher fee
        second = services.repository.get(record.id)
        assert second.status == RecordStatus.SUBMITTED and second.tx_hash != first.tx_hash
        new = registry.w3.eth.get_transaction(second.tx_hash)
        assert new["nonce"] == old["nonce"]
        assert new["maxPriorityFeePerGas"] >= old["maxPriorityFeePerGas"] * 1.1
        assert new["maxFeePerGas"] >= old["maxFeePerGas"] * 1.1
        rpc(services, "evm_mine")
        services.anchorer.run_once()
        stored = services.repository.get(record.id)
        assert stored.status == RecordStatus.REGISTERED and stored.tx_hash == second.tx_hash
        assert registry.counts() == (1, 0)
    finally:
        services.close()


def test_web3_errors_come_out_as_the_services_errors(stack: Services) -> None:
    registry = stack.chain.registry
    digest = os.urandom(32).hex()
    registry.w3.eth.wait_for_transaction_receipt(registry.submit(digest, "bafkreiabc"))
    with pytest.raises(ChainError, match="already registered"):
        registry.submit(digest, "bafkreiabc")
    sender = registry.sender
    assert sender is not None
    with pytest.raises(ChainError, match="refused") as refused:  # a nonce long used: the node says no
        sender.send({"to": registry.address, "data": "0x", "value": 0, "gas": 30_000}, nonce=0)
    assert "nonce" in refused.value.detail
    dead = TxSender.__new__(TxSender)  # the same sender pointed at a port where nothing listens
    dead.__dict__.update(sender.__dict__)
    dead._url = f"http://127.0.0.1:{_free_port()}"
    dead._fee_cache = None
    with pytest.raises(ChainUnavailableError):
        dead.send({"to": registry.address, "data": "0x", "value": 0})


class RpcProxy:
    """A JSON-RPC proxy in front of anvil that counts requests and can play a dead node (HTTP 502)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests = 0
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                proxy.requests += 1
                if proxy.down:
                    status, reply = 502, b"<html>bad gateway</html>"
                else:
                    answer = httpx.post(proxy.upstream, content=body, headers={"content-type": "application/json"})
                    status, reply = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def behind_proxy(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A service whose chain is anvil (hosted by another stack) reached through a counting proxy."""
    host = Services.open(Settings(data_dir=tmp_path / "host"), start_worker=False)
    proxy = RpcProxy(host.chain.registry.rpc_url)
    chain_dir = tmp_path / "host" / "chain"
    settings = Settings(
        data_dir=tmp_path / "data",
        rpc_url=proxy.url,
        registry_address=host.chain.registry.address,
        nft_address=host.chain.nft.address if host.chain.nft is not None else None,
        chain_key_file=chain_dir / "operator.key",
        chain_owner_key_file=chain_dir / "owner.key",
        anchor_poll_interval_s=0.05,
    )
    services = Services.open(settings)
    yield services, proxy
    services.close()
    proxy.close()
    host.close()


def test_idle_writer_makes_at_most_one_rpc_call_a_second(behind_proxy) -> None:  # type: ignore[no-untyped-def]
    services, proxy = behind_proxy
    record = services.certifier.certify(small_png(400)).record
    wait_for(lambda: services.repository.get(record.id).status == RecordStatus.REGISTERED)
    time.sleep(0.5)
    before = proxy.requests
    time.sleep(4.0)
    assert proxy.requests - before <= 4, f"{proxy.requests - before} RPC calls in 4 s of idling"


def test_chain_outage_backs_off_and_logs_one_line_per_change(  # type: ignore[no-untyped-def]
    behind_proxy, caplog: pytest.LogCaptureFixture
) -> None:
    services, proxy = behind_proxy
    caplog.set_level(logging.DEBUG, logger="provenance.anchoring.anchor")
    proxy.down = True
    record = services.certifier.certify(small_png(500)).record
    before = proxy.requests
    time.sleep(4.0)
    tries = proxy.requests - before
    assert 1 <= tries <= 12, f"{tries} RPC calls in 4 s of outage: no back-off"
    assert services.repository.get(record.id).status == RecordStatus.PENDING
    proxy.down = False
    wait_for(lambda: services.repository.get(record.id).status == RecordStatus.REGISTERED, timeout=40)
    lines = [r for r in caplog.records if r.name == "provenance.anchoring.anchor" and r.levelno >= logging.INFO]
    paused = [r for r in lines if "anchoring paused" in r.getMessage()]
    resumed = [r for r in lines if "anchoring resumed" in r.getMessage()]
    assert len(paused) == 1 and "does not answer" in paused[0].getMessage()
    assert len(resumed) == 1
    assert not any(r.exc_info for r in lines), "no traceback at INFO or above"


def test_only_the_lease_holder_anchors_and_another_takes_over(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", anchor_poll_interval_s=0.05, writer_retry_s=0.2)
    host = Services.open(settings, start_worker=False)  # starts anvil and keeps it; never writes
    first = Services.open(settings)
    wait_for(lambda: first.worker is not None and first.worker.is_writer)
    second = Services.open(settings)  # same database, same key: a second instance
    try:
        assert second.worker is not None
        time.sleep(0.5)
        assert not second.worker.is_writer, "one writer per database"
        served = second.certifier.certify(small_png(600)).record  # certified by the one that does not write
        wait_for(lambda: second.repository.get(served.id).status == RecordStatus.REGISTERED)
        first.close()  # the writer goes away: the lease is free
        wait_for(lambda: second.worker is not None and second.worker.is_writer, timeout=10)
        later = second.certifier.certify(small_png(601)).record
        wait_for(lambda: second.repository.get(later.id).status == RecordStatus.REGISTERED)
        assert second.chain.registry.counts() == (2, 0)
    finally:
        second.close()
        first.close()
        host.close()
