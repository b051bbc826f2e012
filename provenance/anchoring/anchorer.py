"""The anchoring state machine: one pass moves records and batch roots from ``pending`` to ``registered``.

The modes (``single``, ``batch``, ``auto``), the Merkle batches and how a pass repairs a crash are
described in ``provenance.anchoring.anchor``; the thread that runs passes while this process holds the
writer lease is ``provenance.anchoring.worker``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provenance.anchoring.merkle import MerkleTree
from provenance.chain import Registry
from provenance.chain.transactions import ContractRefusedError
from provenance.db.models import AnchorBatch, Record, RecordStatus, utcnow
from provenance.db.repository import RecordRepository
from provenance.errors import ChainError
from provenance.ipfs import ContentStore
from provenance.observability import metrics

# The logger keeps the name it had before the module was split: log configurations and filters name it.
log = logging.getLogger("provenance.anchoring.anchor")
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
    send_many: Callable[[list[Any]], list[str | ChainError]]  # sends their transactions: tx hash or error each
    set_status: Callable[..., None]  # (key, status, **fields)
    ration: Callable[[list[Any]], list[Any]] = lambda items: items  # which pending items may be sent now


class Anchorer:
    """One pass of the anchoring state machine; run by the writer's worker thread, or by the CLI holding the lease."""

    def __init__(
        self,
        repository: RecordRepository,
        registry: Registry,
        *,
        store: ContentStore | None = None,
        mode: str = "auto",
        batch_max_items: int = 256,
        batch_max_seconds: float = 10.0,
        batch_backlog: int = 32,
        confirmations: int = 1,
        replace_after_s: float = 60.0,
        on_chain_reset: Callable[[], None] | None = None,
        single_per_account_per_min: int = 0,
        exempt_account: Callable[[str], bool] | None = None,
    ) -> None:
        if mode not in ("single", "batch", "auto"):
            raise ValueError(f"anchor mode must be 'auto', 'single' or 'batch', not {mode!r}")
        self.repository = repository
        self.registry = registry
        self.store = store
        self.mode = mode
        self.batch_max_items = batch_max_items
        self.batch_max_seconds = batch_max_seconds
        self.batch_backlog = batch_backlog
        self.confirmations = confirmations
        self.replace_after_s = replace_after_s
        self.on_chain_reset = on_chain_reset
        # auto mode: an account's single registrations per minute (0: no rule); exempt_account(id): admin.
        self.single_per_account_per_min = single_per_account_per_min
        self.exempt_account = exempt_account
        self._singles: dict[str, deque[float]] = {}  # account -> when its recent single transactions were sent
        self._deferred: set[str] = set()  # records over their account's rate: they wait for a batch
        self._exempt: dict[str, tuple[bool, float]] = {}  # account -> (exempt, when looked up)
        self._lock = threading.Lock()
        # Look every pending record up on chain before sending it: true at start, after taking the
        # writer lease and after a failed pass (a transaction sent just before a crash is on chain).
        self._verify_pending = True
        self._waiting_since: dict[str, float] = {}  # tx hash -> when this process first saw it waiting
        # Passes that follow each of this one under the same lease and sender (lineage.anchoring.LineageAnchorer).
        self.followers: list[Callable[[], object]] = []

    def on_leadership(self) -> None:
        """This process just became the chain writer: trust nothing it did not see itself."""
        with self._lock:
            self._verify_pending = True
            self._waiting_since.clear()
            self.registry.resync_nonce()

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
            send_many=lambda records: self.registry.submit_many([(r.sha256, r.cid) for r in records]),
            set_status=self.repository.set_status,
            ration=self._ration_singles,
        )

    # --- the per-account rule (auto mode) -------------------------------------------------------
    def _is_exempt(self, account_id: str | None) -> bool:
        if account_id is None or self.exempt_account is None:
            return account_id is None  # records from before accounts, or the CLI's own
        now = time.monotonic()
        cached = self._exempt.get(account_id)
        if cached is None or now - cached[1] > 60:  # a key made admin (or revoked) counts within a minute
            cached = (self.exempt_account(account_id), now)
            self._exempt[account_id] = cached
        return cached[0]

    def _ration_singles(self, records: list[Record]) -> list[Record]:
        """The records that may have a transaction of their own now; the others are deferred to a batch."""
        limit = self.single_per_account_per_min
        if self.mode != "auto" or limit <= 0:
            return records
        now = time.monotonic()
        allowed: list[Record] = []
        for record in records:
            if record.id in self._deferred:
                continue
            if self._is_exempt(record.account_id):
                allowed.append(record)
                continue
            sent = self._singles.setdefault(str(record.account_id), deque())
            while sent and now - sent[0] >= 60:
                sent.popleft()
            if len(sent) >= limit:
                self._deferred.add(record.id)
                continue
            sent.append(now)
            allowed.append(record)
        return allowed

    def form_deferred_batches(self) -> int:
        """Auto mode: anchor the records deferred by the per-account rule as Merkle batches, closed when
        ``batch_max_items`` wait or the oldest has waited ``batch_max_seconds`` (as in batch mode)."""
        if not self._deferred:
            return 0
        pending = self.repository.pending_unbatched(max(self.batch_max_items, 1000))
        pending_ids = {r.id for r in pending}
        if len(pending) < max(self.batch_max_items, 1000):
            self._deferred &= pending_ids  # registered or batched meanwhile: forget them
        deferred = [r for r in pending if r.id in self._deferred]
        formed = 0
        while deferred:
            oldest = deferred[0].created_at
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=utcnow().tzinfo)
            waited = (utcnow() - oldest).total_seconds()
            if len(deferred) < self.batch_max_items and waited < self.batch_max_seconds:
                break
            chunk, deferred = deferred[: self.batch_max_items], deferred[self.batch_max_items :]
            self._create_batch(chunk)
            self._deferred -= {r.id for r in chunk}
            formed += 1
        return formed

    def _batches(self) -> _Track:
        def on_chain(batch: AnchorBatch) -> int | None:
            entry = self.registry.batch(batch.root)
            return entry.block_number if entry.anchored else None

        def send_many(batches: list[AnchorBatch]) -> list[str | ChainError]:
            results: list[str | ChainError] = []
            for batch in batches:
                try:
                    results.append(self.registry.submit_batch(batch.root, batch.leaves_cid, batch.count))
                except ChainError as exc:
                    results.append(exc)
            return results

        return _Track(
            items=self.repository.batches_in_status,
            key=lambda batch: batch.root,
            block_on_chain=on_chain,
            send_many=send_many,
            set_status=self.repository.set_batch_status,
        )

    def _register(self, track: _Track, item: Any, block_number: int, tx_hash: str | None) -> None:
        track.set_status(track.key(item), RecordStatus.REGISTERED, **self._chain_fields(block_number, tx_hash))
        metrics.observe_registration(item)  # certified (or batched) -> registered

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
        items = [i for i in track.items(RecordStatus.SUBMITTED)]
        if not items:
            return 0  # idle: no RPC call at all
        done = 0
        hashes = [i.tx_hash or "0x" + "00" * 32 for i in items]
        outcomes = self.registry.outcomes(hashes)
        # The head after the receipts: read before them, a block mined in between would look too shallow to count.
        head = self.registry.block_number()
        unmined = [h for h, o in zip(hashes, outcomes, strict=True) if o is None]
        known = dict(zip(unmined, self.registry.known(unmined), strict=True)) if unmined else {}
        now = time.monotonic()
        for item, tx_hash, outcome in zip(items, hashes, outcomes, strict=True):
            if outcome is not None and outcome.success:
                if self._deep_enough(outcome.block_number, head):
                    self._register(track, item, outcome.block_number, item.tx_hash)
                    self._waiting_since.pop(tx_hash, None)
                    done += 1
                continue
            if outcome is None and known.get(tx_hash):
                self._maybe_replace(track, item, tx_hash, now)  # still waiting to be mined
                continue
            self._waiting_since.pop(tx_hash, None)
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

    def _maybe_replace(self, track: _Track, item: Any, tx_hash: str, now: float) -> None:
        """A transaction waiting longer than ``replace_after_s``: same nonce, higher fee."""
        first = self._waiting_since.setdefault(tx_hash, now)
        if now - first < self.replace_after_s:
            return
        new_hash = self.registry.replace(tx_hash)
        self._waiting_since.pop(tx_hash, None)
        if new_hash is None or new_hash == tx_hash:
            return  # mined meanwhile, or gone: the next pass sees which
        log.info("transaction %s waited %.0fs; replaced by %s with a higher fee", tx_hash, now - first, new_hash)
        self._waiting_since[new_hash] = now
        track.set_status(track.key(item), RecordStatus.SUBMITTED, tx_hash=new_hash)

    def _submit(self, track: _Track, *, verify: bool = True) -> int:
        items = track.items(RecordStatus.PENDING)
        if not items:
            return 0
        head: int | None = None
        if verify:
            head = self.registry.block_number()
            items = [item for item in items if not self._settle(track, item, head)]
        items = track.ration(items)
        if not items:
            return 0
        results = track.send_many(items)
        sent = 0
        unavailable: ChainError | None = None
        for item, result in zip(items, results, strict=True):
            if isinstance(result, str):
                sent += 1
                self._waiting_since[result] = time.monotonic()
                track.set_status(track.key(item), RecordStatus.SUBMITTED, tx_hash=result)
            elif isinstance(result, ContractRefusedError):
                # The contract refuses it: already registered (by a crashed run), or a real refusal.
                head = head if head is not None else self.registry.block_number()
                if not self._settle(track, item, head):
                    track.set_status(track.key(item), RecordStatus.FAILED, chain_error=result.detail)
            else:  # the node did not take it (unreachable, busy): it stays pending for the next pass
                unavailable = unavailable or result
        if unavailable is not None:
            raise unavailable
        return sent

    def confirm_submitted(self) -> int:
        """Settle the records' sent transactions; returns how many records became registered."""
        return self._confirm(self._records())

    def submit_pending(self) -> int:
        """Send a transaction for each pending record (not in a batch); returns how many were sent."""
        return self._submit(self._records(), verify=self._verify_pending)

    def confirm_batches(self) -> int:
        """Settle the batch roots' sent transactions; returns how many batches became registered."""
        return self._confirm(self._batches())

    def submit_batches(self) -> int:
        """Send an ``anchorBatch`` transaction for each pending batch; returns how many were sent."""
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

    def form_backlog_batches(self) -> int:
        """Auto mode: when ``batch_backlog`` records or more wait, anchor them as Merkle batches."""
        formed = 0
        while True:
            pending = self.repository.pending_unbatched(self.batch_max_items)
            if len(pending) < self.batch_backlog:
                return formed
            if self._verify_pending:  # one sent just before a crash must not also become a leaf
                head = self.registry.block_number()
                track = self._records()
                pending = [r for r in pending if not self._settle(track, r, head)]
                if len(pending) < self.batch_backlog:
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
            try:
                self.confirm_submitted()
                self.confirm_batches()
                sent = 0
                # Records still pending from before a switch to batch mode simply join the next batch.
                if self.mode == "batch":
                    self.form_batches(force=force_batch)
                elif self.mode == "auto":
                    if force_batch:
                        self.form_batches(force=True)
                    else:
                        self.form_backlog_batches()
                        self.form_deferred_batches()
                if self.mode != "single":
                    sent += self.submit_batches()
                if self.mode != "batch":
                    sent += self.submit_pending()
                self._verify_pending = False
            except BaseException:
                self._verify_pending = True
                raise
            if sent:
                self.confirm_submitted()
                self.confirm_batches()
            for follow in self.followers:
                follow()
