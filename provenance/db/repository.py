"""``RecordRepository``: the only code that talks SQL."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Protocol

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from provenance.db.models import (
    Account,
    AnchorBatch,
    HealthProbe,
    MarkReference,
    NftToken,
    NftVoucher,
    Record,
    RecordFingerprint,
    RecordStatus,
    SigningKeyRow,
    utcnow,
)
from provenance.errors import AlreadyCertifiedError


class PackedFingerprints(Protocol):
    """What the database keeps of an image's fingerprints (``provenance.marks.fingerprint.ImageFingerprints``)."""

    @property
    def iscc(self) -> str:
        """The whole-image ISCC code."""
        ...

    @property
    def scheme(self) -> str:
        """The layout of the packed codes."""
        ...

    def packed(self) -> bytes:
        """The codes as stored."""
        ...


def new_record_id() -> str:
    """A URL-safe random id, 128 bits."""
    return secrets.token_hex(16)


class RecordRepository:
    """Records, their fingerprints, mark references, batches and signing keys in the database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # --- writes -----------------------------------------------------------------------------
    def add(
        self, record: Record, fingerprints: PackedFingerprints | None = None, mark_reference: bytes | None = None
    ) -> Record:
        """Insert a record (its fingerprints, its mark reference) in one transaction.

        A duplicate hash raises AlreadyCertifiedError.
        """
        with self._sessions.begin() as session:
            session.add(record)
            if fingerprints is not None:
                session.add(_fingerprint_row(record.id, fingerprints))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                raise AlreadyCertifiedError("These exact bytes are already certified.") from None
            if mark_reference is not None:  # after the record's row: its foreign key points there
                session.add(MarkReference(record_id=record.id, data=mark_reference))
        return record

    def ensure_key(self, key_id: str, public_key_pem: str) -> None:
        """Record a signing key's public key, once."""
        with self._sessions.begin() as session:
            if session.get(SigningKeyRow, key_id) is None:
                session.add(SigningKeyRow(key_id=key_id, public_key_pem=public_key_pem))

    def set_status(self, record_id: str, status: str, **fields: object) -> None:
        """Move a record to ``status``, setting the given columns too."""
        with self._sessions.begin() as session:
            values: dict[str, object] = {"status": status, **fields}
            if status == RecordStatus.REGISTERED:
                values.setdefault("registered_at", utcnow())
            session.execute(update(Record).where(Record.id == record_id).values(**values))

    def requeue_all(self) -> int:
        """Send every record and batch back to ``pending`` (the chain they were on is gone).

        Batched records keep their batch and proof: the same root is anchored again.
        """
        with self._sessions.begin() as session:
            result = session.execute(
                update(Record)
                .where(Record.status != RecordStatus.PENDING)
                .values(status=RecordStatus.PENDING, tx_hash=None, block_number=None, registered_at=None)
            )
            session.execute(
                update(AnchorBatch)
                .where(AnchorBatch.status != RecordStatus.PENDING)
                .values(status=RecordStatus.PENDING, tx_hash=None, block_number=None, registered_at=None)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def requeue(self, record_ids: list[str], batch_roots: list[str]) -> None:
        """Send these records and batches back to ``pending`` (the chain lost them)."""
        reset = {"status": RecordStatus.PENDING, "tx_hash": None, "block_number": None, "registered_at": None}
        with self._sessions.begin() as session:
            if record_ids:
                session.execute(update(Record).where(Record.id.in_(record_ids)).values(**reset))
            if batch_roots:
                session.execute(update(AnchorBatch).where(AnchorBatch.root.in_(batch_roots)).values(**reset))
                session.execute(update(Record).where(Record.batch_root.in_(batch_roots)).values(**reset))

    # --- fingerprints -----------------------------------------------------------------------
    def add_fingerprints(self, record_id: str, fingerprints: PackedFingerprints) -> None:
        """Store the fingerprints of a record already inserted (``add`` can take them in its transaction)."""
        with self._sessions.begin() as session:
            session.add(_fingerprint_row(record_id, fingerprints))

    def fingerprints_since(self, cursor: int, limit: int) -> list[tuple[int, str, str, bytes]]:
        """(row id, record id, scheme, packed codes) of the rows after ``cursor``, oldest first."""
        query = (
            select(RecordFingerprint.id, RecordFingerprint.record_id, RecordFingerprint.scheme, RecordFingerprint.codes)
            .where(RecordFingerprint.id > cursor)
            .order_by(RecordFingerprint.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [(int(i), str(r), str(s), bytes(c)) for i, r, s, c in session.execute(query)]

    def without_fingerprints(self, limit: int = 500) -> list[Record]:
        """Records certified before fingerprints existed (or with fingerprinting off), oldest first."""
        with self._sessions() as session:
            has_row = select(RecordFingerprint.record_id).where(RecordFingerprint.record_id == Record.id).exists()
            return list(session.scalars(select(Record).where(~has_row).order_by(Record.created_at).limit(limit)))

    def fingerprints(self, record_id: str) -> RecordFingerprint | None:
        """A record's fingerprint row, if it has one."""
        with self._sessions() as session:
            return session.scalars(select(RecordFingerprint).where(RecordFingerprint.record_id == record_id)).first()

    # --- batches ----------------------------------------------------------------------------
    def pending_unbatched(self, limit: int) -> list[Record]:
        """The oldest pending records not yet in a batch."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(Record)
                    .where(Record.status == RecordStatus.PENDING, Record.batch_root.is_(None))
                    .order_by(Record.created_at)
                    .limit(limit)
                )
            )

    def create_batch(self, batch: AnchorBatch, proofs: dict[str, list[str]]) -> None:
        """Insert a batch and give each of its records the root and its proof, in one transaction."""
        with self._sessions.begin() as session:
            session.add(batch)
            for record_id, proof in proofs.items():
                session.execute(
                    update(Record)
                    .where(Record.id == record_id, Record.batch_root.is_(None))
                    .values(batch_root=batch.root, merkle_proof=proof)
                )

    def batches_in_status(self, status: str, limit: int = 100) -> list[AnchorBatch]:
        """The oldest batches in a status."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(AnchorBatch)
                    .where(AnchorBatch.status == status)
                    .order_by(AnchorBatch.created_at)
                    .limit(limit)
                )
            )

    def get_batch(self, root: str) -> AnchorBatch | None:
        """A batch by its Merkle root."""
        with self._sessions() as session:
            return session.get(AnchorBatch, root)

    def set_batch_status(self, root: str, status: str, **fields: object) -> None:
        """Update a batch; when it becomes registered, so do its records (same tx, same block)."""
        with self._sessions.begin() as session:
            values: dict[str, object] = {"status": status, **fields}
            if status == RecordStatus.REGISTERED:
                values.setdefault("registered_at", utcnow())
            batch_columns = {"status", "tx_hash", "block_number", "chain_error", "registered_at"}
            batch_values = {k: v for k, v in values.items() if k in batch_columns}
            session.execute(update(AnchorBatch).where(AnchorBatch.root == root).values(**batch_values))
            record_values = {
                k: v
                for k, v in values.items()
                if k
                in ("status", "tx_hash", "block_number", "registered_at", "chain_id", "registry_address", "chain_error")
            }
            session.execute(update(Record).where(Record.batch_root == root).values(**record_values))

    def registered(self, *, batched: bool, limit: int = 100_000) -> list[tuple[str, str]]:
        """(record id or batch root, sha256 or root) of everything the database believes is on chain."""
        with self._sessions() as session:
            if batched:
                roots = session.scalars(
                    select(AnchorBatch.root).where(AnchorBatch.status == RecordStatus.REGISTERED).limit(limit)
                )
                return [(r, r) for r in roots]
            rows = session.execute(
                select(Record.id, Record.sha256)
                .where(Record.status == RecordStatus.REGISTERED, Record.batch_root.is_(None))
                .limit(limit)
            )
            return [(rid, sha) for rid, sha in rows]

    # --- reads ------------------------------------------------------------------------------
    def get(self, record_id: str) -> Record | None:
        """A record by id."""
        with self._sessions() as session:
            return session.get(Record, record_id)

    def pictures(self, record_ids: list[str]) -> dict[str, tuple[Record, str | None]]:
        """Records by id, each with its stored ISCC code (None before fingerprints), in one query."""
        if not record_ids:
            return {}
        with self._sessions() as session:
            rows = session.execute(
                select(Record, RecordFingerprint.iscc)
                .outerjoin(RecordFingerprint, RecordFingerprint.record_id == Record.id)
                .where(Record.id.in_(record_ids))
            ).all()
        return {record.id: (record, iscc) for record, iscc in rows}

    def by_sha256(self, sha256: str) -> Record | None:
        """The record of exactly these bytes (hex SHA-256), if any."""
        with self._sessions() as session:
            return session.scalars(select(Record).where(Record.sha256 == sha256)).first()

    def marked_sizes(self) -> set[tuple[int, int]]:
        """The distinct (width, height) of marked records (the index ``ix_records_size`` serves it)."""
        with self._sessions() as session:
            query = select(Record.width, Record.height).where(Record.watermark_id.is_not(None)).distinct()
            return {(int(w), int(h)) for w, h in session.execute(query)}

    def mark_reference(self, record_id: str) -> bytes | None:
        """The stored reference of a record's luminance mark (None: its mark has no luminance component)."""
        with self._sessions() as session:
            return session.scalar(select(MarkReference.data).where(MarkReference.record_id == record_id))

    def has_legacy_marks(self) -> bool:
        """Whether any record's mark was embedded with the library's layout (before keyed layouts)."""
        with self._sessions() as session:
            return session.scalar(select(Record.id).where(Record.mark_layout == 1).limit(1)) is not None

    def account_name(self, account_id: str | None) -> str | None:
        """The name of the account that certified a record (None for records made before accounts)."""
        if account_id is None:
            return None
        with self._sessions() as session:
            account = session.get(Account, account_id)
            return account.name if account is not None else None

    def by_watermark(self, watermark_id: int) -> Record | None:
        """The record a watermark id belongs to, if any."""
        with self._sessions() as session:
            return session.scalars(select(Record).where(Record.watermark_id == watermark_id)).first()

    def public_key(self, key_id: str) -> str | None:
        """A signing key's public key (PEM), if recorded."""
        with self._sessions() as session:
            row = session.get(SigningKeyRow, key_id)
            return row.public_key_pem if row else None

    def watermark_taken(self, watermark_id: int) -> bool:
        """Whether a record already uses this watermark id."""
        return self.by_watermark(watermark_id) is not None

    def in_status(self, status: str, limit: int = 100) -> list[Record]:
        """The oldest records in a status."""
        with self._sessions() as session:
            return list(
                session.scalars(select(Record).where(Record.status == status).order_by(Record.created_at).limit(limit))
            )

    def page(self, account_id: str | None, limit: int, after: tuple[dt.datetime, str] | None = None) -> list[Record]:
        """Records newest first, one account's or (``account_id`` None) everyone's.

        Keyset pagination: ``after`` is the (created_at, id) of the last record of the previous
        page, so pages stay stable while new records arrive.
        """
        query = select(Record).order_by(Record.created_at.desc(), Record.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(Record.account_id == account_id)
        if after is not None:
            created, record_id = after
            query = query.where(
                or_(Record.created_at < created, and_(Record.created_at == created, Record.id < record_id))
            )
        with self._sessions() as session:
            return list(session.scalars(query))

    def counts(self) -> dict[str, int]:
        """How many records are in each status."""
        with self._sessions() as session:
            rows = session.execute(select(Record.status, func.count()).group_by(Record.status)).all()
            return {status: int(n) for status, n in rows}

    def probe_write(self, name: str = "healthz") -> None:
        """Commit one small write (``/healthz``): a read-only, full or unreachable database fails here."""
        with self._sessions.begin() as session:
            session.merge(HealthProbe(name=name, checked_at=utcnow()))

    def signing_keys(self) -> list[tuple[SigningKeyRow, int, dt.datetime | None]]:
        """Every signing key with how many records it signed and the last time it did."""
        with self._sessions() as session:
            usage = dict(
                (key_id, (n, last))
                for key_id, n, last in session.execute(
                    select(Record.key_id, func.count(), func.max(Record.created_at)).group_by(Record.key_id)
                ).all()
            )
            rows = list(session.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created_at)))
            return [(row, *usage.get(row.key_id, (0, None))) for row in rows]


def _fingerprint_row(record_id: str, fingerprints: PackedFingerprints) -> RecordFingerprint:
    return RecordFingerprint(
        record_id=record_id, iscc=fingerprints.iscc, scheme=fingerprints.scheme, codes=fingerprints.packed()
    )


class NftRepository:
    """Minted tokens and signed vouchers."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def token_for(self, record_id: str) -> NftToken | None:
        """The token minted for a record, if any."""
        with self._sessions() as session:
            return session.scalars(select(NftToken).where(NftToken.record_id == record_id)).first()

    def add_token(self, token: NftToken) -> None:
        """Insert or update a minted token."""
        with self._sessions.begin() as session:
            session.merge(token)

    def add_voucher(self, voucher: NftVoucher) -> None:
        """Insert a signed voucher."""
        with self._sessions.begin() as session:
            session.add(voucher)
