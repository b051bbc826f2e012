"""The trust root a verifier pins, and the document the operator publishes for it.

A verifier pins exactly one thing, out of band: the chain id and the address of the
``ProvenanceRegistry`` (``TrustRoot``). Everything else is read from that contract, where only its
owner can write it: which addresses may register content (writers, with block ranges), which ECDSA
signing keys were valid in which blocks, and the SHA-256 fingerprints of the C2PA trust anchors.

``TrustDocument`` (``GET /.well-known/provenance-trust.json``, ``provenance trust export``) gathers
the pin and the public material a verifier needs (key PEMs, anchor certificates) in one file. The
document is a convenience, not an authority: a verifier that loads it still checks every key and
anchor against the pinned registry.

The document lists what is on chain, not only what the service knows: writers, signing keys and
anchors come from the registry's events (from its deployment block) and their current state. An
entry the service did not publish itself (a key it does not hold, an anchor it does not use, a
writer that is not its key) is marked ``published_by_service: false`` and named in ``warnings``:
whoever holds (or, on a development chain, impersonates) the owner's key can add one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field, ValidationError
from web3 import Web3

from provenance.chain.devchain import development_chain_reason, is_development_chain
from provenance.errors import InputError

if TYPE_CHECKING:
    from provenance.chain.reader import RegistryReader, TrustHistory
    from provenance.chain.setup import ChainConnection
    from provenance.db.repository import RecordRepository
    from provenance.signing import KeyStore

TRUST_FORMAT = "provenance-trust/1"
WELL_KNOWN_PATH = "/.well-known/provenance-trust.json"


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of a certificate's DER: what the registry publishes for a C2PA trust anchor."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def split_certificates(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (an empty or garbled bundle gives an empty list)."""
    data = pem.encode() if isinstance(pem, str) else pem
    if not data.strip():
        return []
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        return []


class TrustRoot(BaseModel):
    """What a verifier pins: the chain and the registry contract on it."""

    chain_id: int | None = Field(default=None, description="None: take the chain id the RPC reports.")
    registry_address: str

    @classmethod
    def of(cls, registry_address: str, chain_id: int | None = None) -> TrustRoot:
        """A pin from an address given on the command line; refuses anything that is not an address."""
        if not Web3.is_address(registry_address):
            raise InputError(f"{registry_address!r} is not a contract address (0x followed by 40 hex digits).")
        return cls(chain_id=chain_id, registry_address=Web3.to_checksum_address(registry_address))

    def names(self, chain_id: int, registry_address: str) -> bool:
        """Whether (chain id, address) is the pinned registry."""
        if not Web3.is_address(registry_address):
            return False
        same_address = Web3.to_checksum_address(registry_address) == Web3.to_checksum_address(self.registry_address)
        return same_address and (self.chain_id is None or self.chain_id == chain_id)

    def describe(self) -> str:
        """The pin in words, for messages."""
        chain = f"chain {self.chain_id}" if self.chain_id is not None else "the RPC's chain"
        return f"registry {self.registry_address} on {chain}"


class PublishedKey(BaseModel):
    """An ECDSA P-256 signing key and the block range in which the registry says it was valid."""

    key_id: str = Field(description="hex SHA-256 of the public key's DER SubjectPublicKeyInfo")
    algorithm: str = "ECDSA P-256 SHA-256"
    public_key_pem: str | None = Field(description="None: a key published on chain that the service does not hold.")
    published: bool
    valid_from_block: int | None
    revoked_at_block: int | None
    active: bool
    published_by_service: bool = Field(default=True, description="False: on the registry, but not this service's.")


class PublishedAnchor(BaseModel):
    """A C2PA trust anchor (root certificate) and whether its fingerprint is published on chain."""

    sha256: str = Field(description="hex SHA-256 of the certificate's DER")
    subject: str | None = Field(description="None: a fingerprint on chain whose certificate the service lacks.")
    certificate_pem: str | None
    published: bool
    published_by_service: bool = Field(default=True, description="False: on the registry, but not this service's.")


class WriterRange(BaseModel):
    """Blocks ``[since, until)`` in which an address was allowed to register content (until None: still is)."""

    since: int
    until: int | None


class PublishedWriter(BaseModel):
    """An address the registry allowed to write, with every range of blocks it was allowed in."""

    address: str
    allowed: bool = Field(description="Allowed to write now.")
    ranges: list[WriterRange] = Field(default_factory=list)
    published_by_service: bool = Field(default=True, description="False: not this service's writer key.")


class TrustDocument(BaseModel):
    """What a verifier fetches once: the pin plus the public material to check against it."""

    format: Literal["provenance-trust/1"] = "provenance-trust/1"
    chain_id: int
    registry_address: str
    nft_address: str | None = None
    owner: str | None = Field(default=None, description="The registry's owner: the only address that can change it.")
    writers: list[str] = Field(default_factory=list, description="Addresses the registry allows to write now.")
    writer_history: list[PublishedWriter] = Field(
        default_factory=list, description="Every address ever allowed to write, from the registry's events."
    )
    signing_keys: list[PublishedKey] = Field(default_factory=list)
    c2pa_trust_anchors: list[PublishedAnchor] = Field(default_factory=list)
    block_number: int | None = Field(default=None, description="The block every entry was read at.")
    development_chain: bool = False
    warnings: list[str] = Field(
        default_factory=list, description="Entries on the registry the service did not publish, and other cautions."
    )
    generated_at: dt.datetime

    def pin(self) -> TrustRoot:
        """The trust root this document names."""
        return TrustRoot(chain_id=self.chain_id, registry_address=self.registry_address)

    def to_json(self) -> str:
        """The document as indented JSON with a final newline."""
        return self.model_dump_json(indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> TrustDocument:
        """Parse a trust document; anything else is an ``InputError`` that says what was expected."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"The trust document is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != TRUST_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise InputError(f"Not a provenance trust document (format {found!r}, expected {TRUST_FORMAT!r}).")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", []))
            raise InputError(f"The trust document is incomplete: {where}: {first.get('msg')}") from None

    @classmethod
    def from_file(cls, path: Path) -> TrustDocument:
        """Read a trust document from a file; an unreadable file is an InputError."""
        try:
            return cls.from_json(path.read_bytes())
        except OSError as exc:
            raise InputError(f"Cannot read the trust document {path}: {exc.strerror}") from None


def _published_keys(
    reader: RegistryReader, history: TrustHistory, repository: RecordRepository, active: str, warnings: list[str]
) -> list[PublishedKey]:
    """Every signing key the service holds or the registry's events name, with its state at the reader's block."""
    local_keys = {row.key_id.lower(): row for row, _count, _last in repository.signing_keys()}
    published_keys: list[PublishedKey] = []
    for key_id in [*local_keys, *(k for k in history.keys if k not in local_keys)]:
        status = reader.key_status(key_id)
        row = local_keys.get(key_id)
        published_keys.append(
            PublishedKey(
                key_id=key_id,
                public_key_pem=row.public_key_pem if row is not None else None,
                published=status.published,
                valid_from_block=status.valid_from,
                revoked_at_block=status.revoked_at,
                active=key_id == active,
                published_by_service=row is not None,
            )
        )
        if row is None and status.published:
            # A revoked key still vouches for what was registered while it was valid.
            until = f", revoked at block {status.revoked_at}" if status.revoked_at else ""
            warnings.append(
                f"signing key {key_id} was published on the registry at block {status.valid_from}{until}, "
                "but this service does not hold it"
            )
    return published_keys


def _published_anchors(
    reader: RegistryReader, history: TrustHistory, anchors_pem: bytes, warnings: list[str]
) -> list[PublishedAnchor]:
    """Every C2PA anchor the service uses or the registry's events name, published or not at the reader's block."""
    local_anchors = {certificate_fingerprint(c): c for c in split_certificates(anchors_pem)}
    anchors: list[PublishedAnchor] = []
    for fp in [*local_anchors, *(f for f in history.anchors if f not in local_anchors)]:
        cert = local_anchors.get(fp)
        published = reader.is_trust_anchor(fp)
        anchors.append(
            PublishedAnchor(
                sha256=fp,
                subject=cert.subject.rfc4514_string() if cert is not None else None,
                certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode() if cert is not None else None,
                published=published,
                published_by_service=cert is not None,
            )
        )
        if cert is None and published:  # a removed anchor no longer counts: only current ones warn
            warnings.append(
                f"C2PA trust anchor {fp} is on the registry, but this service has no such certificate: any "
                "certificate it chains to is trusted by verifiers"
            )
    return anchors


def _published_writers(
    history: TrustHistory, current: list[str], own_writer: str | None, warnings: list[str]
) -> list[PublishedWriter]:
    """Every address ever allowed to write (events) or allowed now, with its block ranges."""
    writer_history: list[PublishedWriter] = []
    for address in [*history.writers, *(a for a in current if a not in history.writers)]:
        ranges = history.writers.get(address, [])
        mine = own_writer is not None and address == own_writer
        writer_history.append(
            PublishedWriter(
                address=address,
                allowed=address in current,
                ranges=[WriterRange(since=since, until=until) for since, until in ranges],
                published_by_service=mine,
            )
        )
        if not mine:
            spans = ", ".join(f"{since}-{until if until is not None else 'now'}" for since, until in ranges)
            warnings.append(
                f"writer {address} is or was allowed on the registry (blocks {spans or 'unknown'}) but is not this "
                "service's writer key (another instance of the service, or not the operator's)"
            )
    return writer_history


def build_trust_document(
    chain: ChainConnection, keys: KeyStore, repository: RecordRepository, anchors_pem: bytes
) -> TrustDocument:
    """The trust document: everything the registry lists (from its events), checked at one block.

    Keys, anchors and writers come from the registry's events since its deployment and the state at
    the latest block, merged with what the service knows locally (key PEMs from ``repository``, the
    active key from ``keys``, the certificates in ``anchors_pem``, its writer key). Anything on chain
    the service did not publish is flagged and warned about.
    """
    registry = chain.registry
    block = registry.reader.block_number()
    reader = registry.reader.at(block)  # one block for every read: a consistent picture
    history = reader.trust_history()
    warnings: list[str] = []
    published_keys = _published_keys(reader, history, repository, keys.active().key_id, warnings)
    anchors = _published_anchors(reader, history, anchors_pem, warnings)
    own_writer = registry.sender.address if registry.sender is not None else None
    current = reader.writers()
    writer_history = _published_writers(history, current, own_writer, warnings)
    development = is_development_chain(registry.chain_id)
    if development:
        warnings.append(development_chain_reason(registry.chain_id))
    nft = chain.nft
    return TrustDocument(
        chain_id=registry.chain_id,
        registry_address=registry.address,
        nft_address=nft.address if nft is not None else None,
        owner=reader.owner(),
        writers=current,
        writer_history=writer_history,
        signing_keys=published_keys,
        c2pa_trust_anchors=anchors,
        block_number=block,
        development_chain=development,
        warnings=warnings,
        generated_at=dt.datetime.now(dt.UTC),
    )
