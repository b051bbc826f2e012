"""SQLAlchemy models. The schema is created only by Alembic migrations (``provenance/db/migrations/versions``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    """Now, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """The declarative base of every table."""


class RecordStatus:
    """Where a record (or a batch) is on its way to the chain."""

    PENDING = "pending"  # certified, not yet sent to the chain
    SUBMITTED = "submitted"  # transaction sent, waiting for it to be mined
    REGISTERED = "registered"  # on chain: tx_hash and block_number set
    FAILED = "failed"  # the chain refused it; chain_error says why


class Record(Base):
    """One certified image."""

    __tablename__ = "records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    cid: Mapped[str] = mapped_column(String(128))
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    source_type: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: the caller stated none
    watermark_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True, nullable=True)
    watermarked: Mapped[bool] = mapped_column(Boolean)
    watermark_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    manifest_label: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    original_filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=RecordStatus.PENDING)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    registry_address: Mapped[str | None] = mapped_column(String(42), nullable=True)
    chain_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    registered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Generated images: the generation parameters (model, weights, seed...) and the job.
    generation: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    # A declared derivative: the record whose content this one was made from (verify names its account first).
    derived_from: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    # The block layout the mark was embedded with (watermark.LAYOUT_VERSION; 1: before keyed layouts).
    mark_layout: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # What certify had to leave out, e.g. a parent manifest that could not be read.
    certify_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Batched anchoring: the Merkle root the record's hash is a leaf of, and its inclusion proof.
    batch_root: Mapped[str | None] = mapped_column(String(66), index=True, nullable=True)
    merkle_proof: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # The account whose key (or CLI, for the admin account) certified it; None for records made before accounts.
    account_id: Mapped[str | None] = mapped_column(String(32), nullable=True)

    # "My records, newest first" pages through this index (it also serves lookups by account alone).
    # The blind mark read asks which sizes marked records have (verify's rescalings): ix_records_size answers it.
    __table_args__ = (
        Index("ix_records_account_id_created_at", "account_id", "created_at"),
        Index("ix_records_size", "width", "height"),
    )


class RecordFingerprint(Base):
    """A record's perceptual fingerprints (``provenance/marks/fingerprint.py``), one row per record.

    ``codes`` packs every indexed code (``ImageFingerprints.packed``): one row per record rather than
    per code, because an index loads them all at start and a million records hold 17 million codes.
    ``id`` only grows: each service instance loads the rows after the last id it has seen.
    """

    __tablename__ = "record_fingerprints"

    # BIGINT on PostgreSQL; SQLite only autoincrements an INTEGER primary key.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(32), ForeignKey("records.id", ondelete="CASCADE"), unique=True)
    iscc: Mapped[str] = mapped_column(String(64), index=True)  # the io.iscc.v0 soft-binding value
    scheme: Mapped[str] = mapped_column(String(32))  # which detector and layout made ``codes``
    codes: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MarkReference(Base):
    """What the service keeps to read a record's luminance mark (``provenance.marks.luma.LumaReference``).

    Secret like the mark key: the unmarked picture's cell values. With them and the certified file the
    mark could be subtracted, so they are never returned by the API nor published. A table of its own,
    read only when a candidate's mark is confirmed, so record queries never load it.
    """

    __tablename__ = "mark_references"

    record_id: Mapped[str] = mapped_column(String(32), ForeignKey("records.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SigningKeyRow(Base):
    """Public half of every ECDSA key that has signed records."""

    __tablename__ = "signing_keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobStatus:
    """Where a generation job is."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class GenerationJob(Base):
    """One generation request and what became of it."""

    __tablename__ = "generation_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    backend: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    record_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AnchorBatch(Base):
    """One Merkle root anchored for many records; its leaves are published on IPFS."""

    __tablename__ = "anchor_batches"

    root: Mapped[str] = mapped_column(String(66), primary_key=True)
    leaves_cid: Mapped[str] = mapped_column(String(128))
    count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True, default=RecordStatus.PENDING)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    registered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NftToken(Base):
    """A minted token: token id = the content hash."""

    __tablename__ = "nft_tokens"

    token_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), unique=True)
    owner: Mapped[str] = mapped_column(String(42))
    metadata_cid: Mapped[str] = mapped_column(String(128))
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    minted_via: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # who asked for the mint
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NftVoucher(Base):
    """An EIP-712 voucher the service signed (the signature itself is not kept)."""

    __tablename__ = "nft_vouchers"

    nonce: Mapped[str] = mapped_column(String(78), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    to: Mapped[str] = mapped_column(String(42))
    expiry: Mapped[int] = mapped_column(BigInteger)
    metadata_cid: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # who asked for the voucher
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Account(Base):
    """Who certifies: records, jobs and keys belong to an account."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is stored, never the key itself."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public key id, also inside the key
    account_id: Mapped[str] = mapped_column(String(32), ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_per_min: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: the settings' default
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdempotencyKey(Base):
    """An ``Idempotency-Key`` of a POST: the request's SHA-256 and, once answered, the answer (kept 24 h).

    ``status_code`` is None while the first request with the key runs; a retry waits for it.
    """

    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class HealthProbe(Base):
    """One row per probe name, rewritten by ``/healthz``: proof that the database takes writes."""

    __tablename__ = "health_probes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    checked_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


# --- lineage: datasets, registered models, training runs (migration 0009) -----------------------
class OnChain:
    """Columns of a row registered on the registry, with the same states as a record (``RecordStatus``)."""

    status: Mapped[str] = mapped_column(String(16), index=True, default=RecordStatus.PENDING)
    registry_key: Mapped[str | None] = mapped_column(String(66), nullable=True)  # the bytes32 registered
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chain_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    registry_address: Mapped[str | None] = mapped_column(String(42), nullable=True)
    chain_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    registered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Dataset(OnChain, Base):
    """A registered dataset: its signed manifest (stored by CID) and the Merkle root over its items."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    root: Mapped[str] = mapped_column(String(66), index=True)  # 0x-hex Merkle root (OpenZeppelin pairing)
    item_count: Mapped[int] = mapped_column(Integer)
    manifest_cid: Mapped[str] = mapped_column(String(128))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    license: Mapped[str | None] = mapped_column(String(128), nullable=True)  # SPDX id of the whole dataset
    # [{"address": "0x...", "bps": 2500, "name": "..."}]: shares of royalties on images it led to
    creators: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    account_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DatasetItem(Base):
    """One item of a dataset, at its leaf position in the Merkle tree."""

    __tablename__ = "dataset_items"

    dataset_id: Mapped[str] = mapped_column(String(32), ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text)  # relative to the dataset's folder (or archive), "/"-separated
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cid: Mapped[str | None] = mapped_column(String(128), nullable=True)  # set when the image was stored (--pin)
    caption: Mapped[str | None] = mapped_column(Text, nullable=True)
    caption_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    license: Mapped[str | None] = mapped_column(String(128), nullable=True)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    iscc: Mapped[str | None] = mapped_column(String(64), nullable=True)  # whole-image code: near-duplicate lookups


class RegisteredModel(OnChain, Base):
    """A signed, registered model: a base checkpoint (a diffusers folder or one file) or a LoRA."""

    __tablename__ = "registered_models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "base" or "lora"
    digest: Mapped[str] = mapped_column(String(64), unique=True, index=True)  # hex SHA-256 over the files
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"path", "sha256", "size"}], sorted by path
    signature: Mapped[str] = mapped_column(Text)  # the model-signing (sigstore bundle) JSON
    signature_cid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    architecture: Mapped[str | None] = mapped_column(String(128), nullable=True)  # e.g. the UNet's class / shapes
    base_model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a LoRA's base
    dataset_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a LoRA's training dataset
    training_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    creators: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    account_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One LoRA training run (a job like a generation: queued, running, succeeded, failed, cancelled)."""

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)
    base_model: Mapped[str] = mapped_column(Text)  # the name or path asked for
    base_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # rank, steps, lr, resolution, seed, library versions
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)  # the last logged loss
    output_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the registered LoRA
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    account_id: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
