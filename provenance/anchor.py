"""Anchoring: move records from ``pending`` to ``registered`` on chain, surviving crashes.

The worker never trusts its own memory: every pass reads the database and the chain. A record is
``pending`` until a transaction is sent, ``submitted`` with its tx hash until that transaction
is mined, then ``registered`` with its block. After a crash at any point a pass repairs it:
a submitted transaction the node never saw goes back to pending, and a pending record whose hash
is already on chain (sent just before the crash) is marked registered without a second
transaction, because the contract is the source of truth.
"""

from __future__ import annotations

import logging
import threading

from provenance.chain import Registry
from provenance.db.models import Record, RecordStatus
from provenance.db.repository import RecordRepository
from provenance.errors import ChainError, ProvenanceError

log = logging.getLogger(__name__)


class Anchorer:
    """One pass of the anchoring state machine; used by the worker thread and the CLI."""

    def __init__(self, repository: RecordRepository, registry: Registry) -> None:
        self.repository = repository
        self.registry = registry
        self._lock = threading.Lock()

    def _registered(self, record: Record, block_number: int, tx_hash: str | None) -> None:
        self.repository.set_status(
            record.id,
            RecordStatus.REGISTERED,
            tx_hash=tx_hash,
            block_number=block_number,
            chain_id=self.registry.chain_id,
            registry_address=self.registry.address,
            chain_error=None,
        )

    def confirm_submitted(self) -> int:
        done = 0
        for record in self.repository.in_status(RecordStatus.SUBMITTED):
            assert record.tx_hash is not None
            outcome = self.registry.outcome(record.tx_hash)
            if outcome is not None and outcome.success:
                self._registered(record, outcome.block_number, record.tx_hash)
                done += 1
                continue
            if outcome is None and self.registry.is_known(record.tx_hash):
                continue  # still waiting to be mined
            # Reverted, dropped or never sent: the contract decides what happened.
            entry = self.registry.lookup(record.sha256)
            if entry.registered and entry.block_number is not None:
                self._registered(record, entry.block_number, None)
                done += 1
            elif outcome is None:
                self.repository.set_status(record.id, RecordStatus.PENDING, tx_hash=None)
            else:
                self.repository.set_status(
                    record.id, RecordStatus.FAILED, chain_error=f"transaction {record.tx_hash} reverted"
                )
        return done

    def submit_pending(self) -> int:
        pending = self.repository.in_status(RecordStatus.PENDING)
        if not pending:
            return 0
        nonce = self.registry.next_nonce()
        sent = 0
        for record in pending:
            entry = self.registry.lookup(record.sha256)
            if entry.registered and entry.block_number is not None:
                self._registered(record, entry.block_number, record.tx_hash)
                continue
            try:
                tx_hash = self.registry.submit(record.sha256, record.cid, nonce)
            except ChainError as exc:
                # Another process (the CLI beside a server) may have registered it a moment ago.
                entry = self.registry.lookup(record.sha256)
                if entry.registered and entry.block_number is not None:
                    self._registered(record, entry.block_number, None)
                else:
                    self.repository.set_status(record.id, RecordStatus.FAILED, chain_error=exc.detail)
                continue
            nonce += 1
            sent += 1
            self.repository.set_status(record.id, RecordStatus.SUBMITTED, tx_hash=tx_hash)
        return sent

    def run_once(self) -> None:
        """Confirm what was sent, send what is pending, confirm again (anvil mines instantly)."""
        with self._lock:
            self.confirm_submitted()
            if self.submit_pending():
                self.confirm_submitted()


class AnchorWorker:
    """A daemon thread that runs ``Anchorer.run_once`` when woken or every poll interval."""

    def __init__(self, anchorer: Anchorer, *, poll_interval_s: float = 0.5) -> None:
        self.anchorer = anchorer
        self.poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anchor-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, _record: Record | None = None) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.anchorer.run_once()
            except ProvenanceError as exc:
                log.warning("anchoring pass failed: %s", exc.detail)
            except Exception:  # the RPC can fail in many ways; retry on the next pass
                log.exception("anchoring pass failed; retrying")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
