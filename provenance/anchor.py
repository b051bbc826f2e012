"""Anchoring: move records from ``pending`` to ``registered`` on chain, surviving crashes.

Two modes. ``single``: one ``register(hash, cid)`` transaction per record. ``batch``: pending
records are collected until there are ``batch_max_items`` of them or the oldest has waited
``batch_max_seconds``; their hashes become the leaves of a Merkle tree whose sorted leaf list is
published on IPFS, and one ``anchorBatch(root, leavesCid, count)`` transaction anchors them all.
Each record keeps its root and inclusion proof.

The worker never trusts its own memory: every pass reads the database and the chain. A record
(or batch) is ``pending`` until a transaction is sent, ``submitted`` with its tx hash until that
transaction is mined and buried under ``confirmations`` blocks, then ``registered``. After a crash
at any point a pass repairs it: a transaction the node never saw (dropped, or lost with a reset
dev chain) goes back to pending and is sent again, and a pending item whose hash or root is
already on chain (sent just before a crash) is marked registered without a second transaction,
because the contract is the source of truth and refuses duplicates anyway.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provenance.chain import Registry
from provenance.db.models import AnchorBatch, Record, RecordStatus, utcnow
from provenance.db.repository import RecordRepository
from provenance.errors import ChainError, ProvenanceError
from provenance.ipfs import ContentStore
from provenance.merkle import MerkleTree

log = logging.getLogger(__name__)
LEAVES_FORMAT = "provenance-merkle-batch/1"


def leaves_document(tree: MerkleTree, content_hashes: list[str]) -> bytes:
    """The JSON published on IPFS for a batch: enough for anyone to rebuild every proof."""
    return json.dumps(
        {
            "format": LEAVES_FORMAT,
            "root": "0x" + tree.root.hex(),
            "leaf": "keccak256(bytes.concat(keccak256(abi.encode(bytes32 sha256))))",
            "node": "keccak256 of the two children, smaller first (OpenZeppelin MerkleProof)",
            "content_hashes": sorted(content_hashes),
        },
        indent=1,
    ).encode()


@dataclass(frozen=True)
class _Track:
    """How one kind of anchored item (a record, or a batch root) is read, sent and updated."""

    items: Callable[[str], list[Any]]  # the items in a status
    key: Callable[[Any], str]
    block_on_chain: Callable[[Any], int | None]  # the block the contract registered it in, or None
    send: Callable[[Any], str]  # sends its transaction, returns the tx hash
    set_status: Callable[..., None]  # (key, status, **fields)


class Anchorer:
    """One pass of the anchoring state machine; used by the worker thread and the CLI."""

    def __init__(
        self,
        repository: RecordRepository,
        registry: Registry,
        *,
        store: ContentStore | None = None,
        mode: str = "single",
        batch_max_items: int = 256,
        batch_max_seconds: float = 10.0,
        confirmations: int = 1,
        on_chain_reset: Callable[[], None] | None = None,
    ) -> None:
        if mode not in ("single", "batch"):
            raise ValueError(f"anchor mode must be 'single' or 'batch', not {mode!r}")
        self.repository = repository
        self.registry = registry
        self.store = store
        self.mode = mode
        self.batch_max_items = batch_max_items
        self.batch_max_seconds = batch_max_seconds
        self.confirmations = confirmations
        self.on_chain_reset = on_chain_reset
        self._lock = threading.Lock()

    # --- shared ---------------------------------------------------------------------------
    def _chain_fields(self, block_number: int, tx_hash: str | None) -> dict[str, object]:
        return {
            "tx_hash": tx_hash,
            "block_number": block_number,
            "chain_id": self.registry.chain_id,
            "registry_address": self.registry.address,
            "chain_error": None,
        }

    def _deep_enough(self, block_number: int, head: int) -> bool:
        return head - block_number + 1 >= self.confirmations

    # --- the state machine, the same for records and for batch roots --------------------------
    def _records(self) -> _Track:
        def on_chain(record: Record) -> int | None:
            entry = self.registry.lookup(record.sha256)
            return entry.block_number if entry.registered else None

        return _Track(
            items=lambda status: [r for r in self.repository.in_status(status) if r.batch_root is None],
            key=lambda record: record.id,
            block_on_chain=on_chain,
            send=lambda record: self.registry.submit(record.sha256, record.cid),
            set_status=self.repository.set_status,
        )

    def _batches(self) -> _Track:
        def on_chain(batch: AnchorBatch) -> int | None:
            entry = self.registry.batch(batch.root)
            return entry.block_number if entry.anchored else None

        return _Track(
            items=self.repository.batches_in_status,
            key=lambda batch: batch.root,
            block_on_chain=on_chain,
            send=lambda batch: self.registry.submit_batch(batch.root, batch.leaves_cid, batch.count),
            set_status=self.repository.set_batch_status,
        )

    def _register(self, track: _Track, item: Any, block_number: int, tx_hash: str | None) -> None:
        track.set_status(track.key(item), RecordStatus.REGISTERED, **self._chain_fields(block_number, tx_hash))

    def _settle(self, track: _Track, item: Any, head: int) -> bool:
        """If the item is on chain already (sent just before a crash, or by another process), take
        that as its registration: no second transaction. True when the chain has it."""
        block = track.block_on_chain(item)
        if block is None:
            return False
        if self._deep_enough(block, head):
            self._register(track, item, block, item.tx_hash)
        return True

    def _confirm(self, track: _Track) -> int:
        done = 0
        head = self.registry.block_number()
        for item in track.items(RecordStatus.SUBMITTED):
            outcome = self.registry.outcome(item.tx_hash)
            if outcome is not None and outcome.success:
                if self._deep_enough(outcome.block_number, head):
                    self._register(track, item, outcome.block_number, item.tx_hash)
                    done += 1
                continue
            if outcome is None and self.registry.is_known(item.tx_hash):
                continue  # still waiting to be mined
            # Reverted, dropped or never sent: the contract decides what happened.
            block = track.block_on_chain(item)
            if block is not None:
                if self._deep_enough(block, head):
                    self._register(track, item, block, None)
                    done += 1
            elif outcome is None:  # dropped: its nonce is free again, send it again
                self.registry.resync_nonce()
                track.set_status(track.key(item), RecordStatus.PENDING, tx_hash=None)
            else:
                track.set_status(
                    track.key(item), RecordStatus.FAILED, chain_error=f"transaction {item.tx_hash} reverted"
                )
        return done

    def _submit(self, track: _Track) -> int:
        sent = 0
        head = self.registry.block_number()
        for item in track.items(RecordStatus.PENDING):
            if self._settle(track, item, head):
                continue
            try:
                tx_hash = track.send(item)
            except ChainError as exc:
                if not self._settle(track, item, head):
                    track.set_status(track.key(item), RecordStatus.FAILED, chain_error=exc.detail)
                continue
            sent += 1
            track.set_status(track.key(item), RecordStatus.SUBMITTED, tx_hash=tx_hash)
        return sent

    def confirm_submitted(self) -> int:
        return self._confirm(self._records())

    def submit_pending(self) -> int:
        return self._submit(self._records())

    def confirm_batches(self) -> int:
        return self._confirm(self._batches())

    def submit_batches(self) -> int:
        return self._submit(self._batches())

    # --- batches ------------------------------------------------------------------------------
    def form_batches(self, *, force: bool = False) -> int:
        """Close batches that are full, or whose oldest record has waited long enough."""
        formed = 0
        while True:
            pending = self.repository.pending_unbatched(self.batch_max_items)
            if not pending:
                return formed
            oldest = pending[0].created_at
            if oldest.tzinfo is None:  # SQLite hands datetimes back naive (they were stored as UTC)
                oldest = oldest.replace(tzinfo=utcnow().tzinfo)
            waited = (utcnow() - oldest).total_seconds()
            if len(pending) < self.batch_max_items and waited < self.batch_max_seconds and not force:
                return formed
            self._create_batch(pending)
            formed += 1

    def _create_batch(self, records: list[Record]) -> None:
        if self.store is None:
            raise ChainError("Batched anchoring needs an IPFS store to publish the leaves.")
        hashes = [bytes.fromhex(r.sha256) for r in records]
        tree = MerkleTree.build(hashes)
        leaves_cid = self.store.add(leaves_document(tree, [r.sha256 for r in records])).cid
        root = "0x" + tree.root.hex()
        proofs = {r.id: ["0x" + p.hex() for p in tree.proof(bytes.fromhex(r.sha256))] for r in records}
        self.repository.create_batch(
            AnchorBatch(root=root, leaves_cid=leaves_cid, count=len(records), status=RecordStatus.PENDING), proofs
        )

    # --- repair -------------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Re-queue what the database calls registered but the chain does not have (a dev chain that
        lost blocks when it was killed). Returns how many records and batches were re-queued."""
        missing_records = [
            rid for rid, sha in self.repository.registered(batched=False) if not self.registry.lookup(sha).registered
        ]
        missing_batches = [
            root for root, _ in self.repository.registered(batched=True) if not self.registry.batch(root).anchored
        ]
        if missing_records or missing_batches:
            log.warning(
                "chain lost %d records and %d batches; anchoring them again", len(missing_records), len(missing_batches)
            )
            self.repository.requeue(missing_records, missing_batches)
        return len(missing_records) + len(missing_batches)

    def run_once(self, *, force_batch: bool = False) -> None:
        """Confirm what was sent, send what is pending, confirm again (anvil mines instantly)."""
        with self._lock:
            self.confirm_submitted()
            self.confirm_batches()
            # Records still pending from before a switch to batch mode simply join the next batch.
            if self.mode == "batch":
                self.form_batches(force=force_batch)
                sent = self.submit_batches()
            else:
                sent = self.submit_pending()
            if sent:
                self.confirm_submitted()
                self.confirm_batches()


class AnchorWorker:
    """A daemon thread that runs ``Anchorer.run_once`` when woken or every poll interval."""

    def __init__(self, anchorer: Anchorer, *, poll_interval_s: float = 0.5, health_check_s: float = 5.0) -> None:
        self.anchorer = anchorer
        self.poll_interval_s = poll_interval_s
        self.health_check_s = health_check_s
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

    def _check_chain(self) -> None:
        """A dev chain restarted without its state has no registry: repair it from the database."""
        registry = self.anchorer.registry
        if self.anchorer.on_chain_reset is not None and not registry.is_deployed():  # type: ignore[attr-defined]
            log.warning("the registry is gone from the chain (reset dev chain?); redeploying and re-anchoring")
            self.anchorer.on_chain_reset()

    def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_check > self.health_check_s:
                    last_check = time.monotonic()
                    self._check_chain()
                self.anchorer.run_once()
            except ProvenanceError as exc:
                log.warning("anchoring pass failed: %s", exc.detail)
            except Exception:  # the RPC can fail in many ways; retry on the next pass
                log.exception("anchoring pass failed; retrying")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
