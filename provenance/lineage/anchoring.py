"""Registering dataset roots and model digests on the registry: ``pending -> submitted -> registered / failed``.

A dataset's Merkle root and a model's digest are registered with the registry's ordinary ``register(key, cid)``
under their domain-tagged key (``provenance.lineage.common``), the CID naming the signed manifest (a dataset)
or the signature bundle (a model). ``LineageAnchorer.run_once`` is one pass, run after each pass of the record
anchorer (``Anchorer.followers``): so it runs only in the process that holds the chain writer lease, with the
same sender and nonce sequence, and it repairs a crash as that one does (a row whose key is on chain already is
registered without a second transaction; a dropped transaction goes back to pending).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from provenance.chain import Registry
from provenance.chain.transactions import ContractRefusedError
from provenance.db.models import Dataset, RecordStatus, RegisteredModel, utcnow
from provenance.errors import ChainError

if TYPE_CHECKING:
    from provenance.anchoring.anchorer import Anchorer
    from provenance.chain.writer import WriterLease

OnChainRow = Dataset | RegisteredModel


def _cid_of(row: OnChainRow) -> str:
    """The CID registered with the key: the dataset's manifest, the model's signature bundle."""
    if isinstance(row, Dataset):
        return row.manifest_cid
    return row.signature_cid or ""


class LineageAnchorer:
    """One pass registers pending ``datasets`` and ``registered_models`` rows and confirms their receipts."""

    KINDS: tuple[type[Dataset] | type[RegisteredModel], ...] = (Dataset, RegisteredModel)

    def __init__(self, sessions: sessionmaker[Session], registry: Registry, *, confirmations: int = 1) -> None:
        self.sessions = sessions
        self.registry = registry
        self.confirmations = confirmations

    def _rows(self, status: str, limit: int = 100) -> list[OnChainRow]:
        rows: list[OnChainRow] = []
        with self.sessions() as session:
            for kind in self.KINDS:
                query = select(kind).where(kind.status == status, kind.registry_key.is_not(None)).limit(limit)
                rows.extend(session.scalars(query))
        return rows

    def _set(self, row: OnChainRow, status: str, **fields: object) -> None:
        values: dict[str, object] = {"status": status, **fields}
        if status == RecordStatus.REGISTERED:
            values.setdefault("registered_at", utcnow())
            values.setdefault("chain_id", self.registry.chain_id)
            values.setdefault("registry_address", self.registry.address)
            values.setdefault("chain_error", None)
        kind = type(row)
        with self.sessions.begin() as session:
            session.execute(update(kind).where(kind.id == row.id).values(**values))

    def _key(self, row: OnChainRow) -> str:
        return str(row.registry_key).removeprefix("0x")

    def _settle(self, row: OnChainRow, head: int) -> bool:
        """The key on chain already (sent before a crash, or the same dataset registered twice): registered."""
        entry = self.registry.lookup(self._key(row))
        if not entry.registered or entry.block_number is None:
            return False
        if head - entry.block_number + 1 >= self.confirmations:
            self._set(row, RecordStatus.REGISTERED, block_number=entry.block_number, tx_hash=row.tx_hash)
        return True

    def confirm(self) -> int:
        """Settle the sent transactions; returns how many rows became registered."""
        rows = self._rows(RecordStatus.SUBMITTED)
        if not rows:
            return 0
        done = 0
        outcomes = self.registry.outcomes([r.tx_hash or "0x" + "00" * 32 for r in rows])
        head = self.registry.block_number()  # after the receipts, so a block mined in between counts
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome is not None and outcome.success:
                if head - outcome.block_number + 1 >= self.confirmations:
                    self._set(row, RecordStatus.REGISTERED, block_number=outcome.block_number)
                    done += 1
                continue
            if outcome is None and row.tx_hash and self.registry.is_known(row.tx_hash):
                continue  # still waiting to be mined
            if self._settle(row, head):
                done += 1
            elif outcome is None:  # dropped: its nonce is free again
                self.registry.resync_nonce()
                self._set(row, RecordStatus.PENDING, tx_hash=None)
            else:
                self._set(row, RecordStatus.FAILED, chain_error=f"transaction {row.tx_hash} reverted")
        return done

    def submit(self) -> int:
        """Send ``register(key, cid)`` for each pending row not on chain yet; returns how many were sent."""
        rows = self._rows(RecordStatus.PENDING)
        if not rows:
            return 0
        head = self.registry.block_number()
        rows = [r for r in rows if not self._settle(r, head)]
        if not rows:
            return 0
        results = self.registry.submit_many([(self._key(r), _cid_of(r)) for r in rows])
        sent = 0
        unavailable: ChainError | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, str):
                self._set(row, RecordStatus.SUBMITTED, tx_hash=result)
                sent += 1
            elif isinstance(result, ContractRefusedError):
                if not self._settle(row, self.registry.block_number()):
                    self._set(row, RecordStatus.FAILED, chain_error=result.detail)
            else:
                unavailable = unavailable or result
        if unavailable is not None:
            raise unavailable
        return sent

    def run_once(self) -> None:
        """Confirm, send, confirm again (anvil mines at once)."""
        self.confirm()
        if self.submit():
            self.confirm()

    def reconcile(self) -> int:
        """Re-queue rows the database calls registered but the chain does not have (a reset dev chain)."""
        registered = self._rows(RecordStatus.REGISTERED, limit=100_000)
        lost = [r for r in registered if not self.registry.lookup(self._key(r)).registered]
        for row in lost:
            self._set(row, RecordStatus.PENDING, tx_hash=None, block_number=None, registered_at=None)
        return len(lost)


def wait_registered(
    anchorer: Anchorer,
    lease: WriterLease,
    status: Callable[[], str],
    *,
    timeout_s: float,
    say: Callable[[str], None],
) -> str:
    """What a CLI command does after writing a pending row: register it (``drive_registration``, whose anchoring
    passes the lineage anchorer follows) and return its last status."""
    from provenance.anchoring.worker import drive_registration

    last = drive_registration(
        anchorer, lease, lambda: {"row": status()}, wait=True, timeout_s=timeout_s, say=say, what="it"
    )
    return last["row"]
