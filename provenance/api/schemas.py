"""API schemas, kept apart from the database models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from generator.request import GenerationSpec, LoraSpec
from provenance.db.models import Record
from provenance.errors import InvalidAddressError
from provenance.nft.service import checked_address
from provenance.verify.verifier import VerificationResult


def _as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without a zone; every timestamp the service stores is UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# A timestamp that always carries its zone (UTC), as the OpenAPI ``date-time`` format requires.
UtcDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]


def _eth_address(value: str) -> str:
    try:
        return checked_address(value, "to")
    except InvalidAddressError as exc:
        # The 422's error type says what was wrong, its message which rule; the location names the field.
        raise PydanticCustomError("invalid_address", exc.detail) from None


# An address that receives a token: lowercase, uppercase or a correct EIP-55 checksum, never the zero address
# (``nft.checked_address``, which the CLI uses too). Answers are in the checksummed form.
EthAddress = Annotated[
    str,
    AfterValidator(_eth_address),
    Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="Ethereum address (EIP-55 checksum if mixed case)."),
]


class ErrorOut(BaseModel):
    """Every error the API answers: a stable code and what went wrong."""

    error: str = Field(description="Stable machine-readable code.")
    detail: Any = Field(description="What went wrong and what to do.")


class CertifyOut(BaseModel):
    """A certified image: its record, hash, CID, signature, mark and where to fetch it."""

    record_id: str
    sha256: str
    cid: str
    signature: str = Field(description="base64 DER ECDSA P-256 signature over the file bytes (SHA-256).")
    key_id: str
    watermark_id: int | None
    watermarked: bool
    status: str
    image_url: str

    @classmethod
    def of(cls, record: Record, base_url: str) -> CertifyOut:
        """The answer for ``record``, with absolute links under ``base_url`` (empty: relative links)."""
        return cls(
            record_id=record.id,
            sha256=record.sha256,
            cid=record.cid,
            signature=record.signature,
            key_id=record.key_id,
            watermark_id=record.watermark_id,
            watermarked=record.watermarked,
            status=record.status,
            image_url=f"{base_url}/v1/records/{record.id}/image",
        )


class RecordOut(CertifyOut):
    """A record as stored: the certification plus its registration, generation and lineage."""

    media_type: str
    size_bytes: int
    width: int
    height: int
    source_type: str | None = Field(description="The IPTC digital source type the certifier stated; null: none stated.")
    derived_from: str | None = Field(
        default=None, description="A declared derivative: the record whose content this one was made from."
    )
    certify_note: str | None = Field(default=None, description="What certify had to leave out, and why.")
    watermark_note: str | None
    original_filename: str | None
    tx_hash: str | None
    block_number: int | None
    chain_id: int | None
    registry_address: str | None
    chain_error: str | None
    created_at: UtcDatetime
    registered_at: UtcDatetime | None
    ipfs_url: str
    generation: dict[str, Any] | None = Field(default=None, description="Model, weights, seed... of generated images.")
    job_id: str | None = None

    @classmethod
    def of(cls, record: Record, base_url: str) -> RecordOut:
        """The stored ``record``, with absolute links under ``base_url`` (empty: relative links)."""
        base = CertifyOut.of(record, base_url).model_dump()
        return cls(
            **base,
            media_type=record.media_type,
            size_bytes=record.size_bytes,
            width=record.width,
            height=record.height,
            source_type=record.source_type,
            derived_from=record.derived_from,
            certify_note=record.certify_note,
            watermark_note=record.watermark_note,
            original_filename=record.original_filename,
            tx_hash=record.tx_hash,
            block_number=record.block_number,
            chain_id=record.chain_id,
            registry_address=record.registry_address,
            chain_error=record.chain_error,
            created_at=record.created_at,
            registered_at=record.registered_at,
            ipfs_url=f"{base_url}/ipfs/{record.cid}",
            generation=record.generation,
            job_id=record.job_id,
        )


# The verification report is one model, shared by the API, the CLI and the web page.
VerifyOut = VerificationResult


class SigningKeyOut(BaseModel):
    """One ECDSA signing key the service has used (public half only)."""

    key_id: str = Field(description="hex SHA-256 of the public key's DER SubjectPublicKeyInfo")
    algorithm: str = "ECDSA P-256 SHA-256"
    public_key_pem: str
    active: bool
    records_signed: int
    created_at: UtcDatetime
    last_used_at: UtcDatetime | None


class C2paTrustOut(BaseModel):
    """What a C2PA validator needs to trust this service's manifests."""

    root_certificate_pem: str | None = Field(description="Trust anchor for this service's manifests.")
    signer_chain_pem: str


class KeysOut(BaseModel):
    """The service's public keys: record signing keys and its C2PA trust chain."""

    signing_keys: list[SigningKeyOut]
    c2pa: C2paTrustOut


class ChainOut(BaseModel):
    """Where records are anchored: the chain, the contracts and their ABIs, the anchoring mode."""

    chain_id: int
    rpc_url: str
    registry_address: str
    registry_abi: list[dict[str, Any]]
    nft_address: str | None
    nft_abi: list[dict[str, Any]] | None
    anchor_mode: str
    confirmations: int


class MintIn(BaseModel):
    """Mint a certified record as an NFT to an address."""

    record_id: str
    to: EthAddress = Field(description="Ethereum address that receives the token (EIP-55 checksum if mixed case).")


class MintOut(BaseModel):
    """A minted token: its id (the content hash), transaction, URI, contract and owner."""

    token_id: str = Field(description="The content hash, as uint256 hex.")
    tx_hash: str
    token_uri: str
    contract: str
    owner: str
    royalty_receiver: str | None = Field(
        default=None,
        description="The token's own ERC-2981 receiver: the royalty splitter of its lineage's creators and its "
        "certifier; null: the contract's default receiver.",
    )


class VoucherIn(MintIn):
    """An EIP-712 mint voucher the recipient redeems (lazy minting), valid for ``ttl_s``."""

    ttl_s: int | None = Field(default=None, ge=60, le=365 * 24 * 3600, description="Validity; default from settings.")


class HealthOut(BaseModel):
    """Liveness of the service and each dependency (database, chain, IPFS) and record counts."""

    status: Literal["ok", "degraded"] = Field(description="degraded (HTTP 503) when any dependency is down.")
    down: list[str] = Field(default_factory=list, description="The dependencies that do not answer.")
    version: str
    database: str
    database_state: dict[str, Any] = Field(default_factory=dict)
    chain: dict[str, Any]
    ipfs: str
    ipfs_state: dict[str, Any] = Field(default_factory=dict)
    records: dict[str, int]


# The API's names for the one generation request shape (``generator.request``): the body of
# ``POST /v1/generations`` is a ``GenerationSpec``, and the OpenAPI document keeps calling it ``GenerationIn``.
LoraIn = LoraSpec


class GenerationIn(GenerationSpec):
    """A text-to-image request. Limits on size and steps come from the settings."""


class JobAccepted(BaseModel):
    """A generation job was queued: poll ``status_url``."""

    job_id: str
    status: str
    status_url: str


class JobProgress(BaseModel):
    """Denoising steps done of the total."""

    step: int
    steps: int


class JobOut(BaseModel):
    """A generation job: its state, progress, attempts and the records it certified."""

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress
    attempts: int
    records: list[CertifyOut]
    error: str | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class RecordPage(BaseModel):
    """One page of records, newest first."""

    items: list[RecordOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class AccountOut(BaseModel):
    """Who an API key acts for (``GET /v1/account``)."""

    model_config = {"from_attributes": True}

    account_id: str
    account_name: str
    key_id: str
    scopes: list[str]
    rate_per_min: int = Field(description="Requests per minute for this key; 0: unlimited.")
