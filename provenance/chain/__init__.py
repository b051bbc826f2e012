"""Stage 7, chain: the ProvenanceRegistry contract behind a small interface.

``Registry`` is what the rest of the service sees: register a content hash with its CID, look a
hash up live, and find out what became of a transaction. ``Web3Registry`` implements it over any
EVM JSON-RPC endpoint; ``AnvilNode`` runs the embedded dev chain.

The registry is also the trust root a verifier pins (chain id + address): its owner publishes the
writers (with block ranges), the ECDSA signing keys (valid from publication to revocation) and the
C2PA trust anchors' fingerprints. ``ChainReader`` is the read side every verifier uses:
``RegistryReader`` reads all of it with only an RPC URL, ``CrossCheckedReader`` through several
that must agree; ``RegistryAdmin`` is the owner's side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from provenance.errors import ChainError


@dataclass(frozen=True)
class Entry:
    """What the contract says about a content hash."""

    registered: bool
    registrant: str | None = None
    block_number: int | None = None
    timestamp: int | None = None
    cid: str | None = None


@dataclass(frozen=True)
class BatchEntry:
    """What the contract says about a batch root."""

    anchored: bool
    registrant: str | None = None
    block_number: int | None = None
    timestamp: int | None = None
    count: int | None = None
    leaves_cid: str | None = None


@dataclass(frozen=True)
class KeyStatus:
    """What the contract says about an ECDSA signing key (by key id).

    A published key is valid in blocks ``valid_from <= b`` and, once revoked, ``b < revoked_at``.
    """

    published: bool
    valid_from: int | None = None
    revoked_at: int | None = None


@dataclass(frozen=True)
class TxOutcome:
    """A mined transaction: success flag and block."""

    success: bool
    block_number: int


class ChainReader(Protocol):
    """What a verifier reads from the registry: one interface, however the reads are made.

    ``Web3Registry`` (the service's live client), ``RegistryReader`` (one RPC, at ``latest`` or a
    fixed block) and ``CrossCheckedReader`` (several RPCs that must agree, at one pinned block) all
    satisfy it, so the registration check (``provenance.verify.registration``) is written once.
    """

    @property
    def address(self) -> str:
        """The registry contract's (checksummed) address."""
        ...

    def lookup(self, sha256_hex: str) -> Entry:
        """What the contract holds for a hash registered on its own."""
        ...

    def batch(self, root_hex: str) -> BatchEntry:
        """What the contract holds for a batch root."""
        ...

    def is_registered(self, sha256_hex: str, root_hex: str | None = None, proof: list[str] | None = None) -> bool:
        """The contract's own verdict: registered alone (no root), or a proven leaf of an anchored root."""
        ...

    def writer_at(self, address: str, block: int) -> bool:
        """True if ``address`` was an allowed writer in block ``block``."""
        ...

    def key_status(self, key_id_hex: str) -> KeyStatus:
        """Whether a signing key was published, from which block, and when it was revoked."""
        ...

    def key_valid_at(self, key_id_hex: str, block: int) -> bool:
        """True if the key was published and not yet revoked in block ``block``."""
        ...

    def is_trust_anchor(self, fingerprint_hex: str) -> bool:
        """True if the SHA-256 of a C2PA root certificate (DER) is a trust anchor now."""
        ...

    def trust_anchors(self) -> list[str]:
        """The trust anchors' SHA-256 fingerprints (lowercase hex, no ``0x``)."""
        ...

    def owner(self) -> str:
        """The admin address that publishes writers, keys and trust anchors."""
        ...


class Registry(ChainReader, Protocol):
    """The registry as the service uses it: the reads of ``ChainReader``, plus writes and transactions."""

    # Read-only for the callers: properties, so an implementation may narrow the types (checksummed addresses).
    @property
    def chain_id(self) -> int:
        """The chain id of the RPC the registry is read and written through."""
        ...

    @property
    def rpc_url(self) -> str:
        """The JSON-RPC endpoint (what a standalone verifier would be given)."""
        ...

    def submit(self, sha256_hex: str, cid: str, nonce: int | None = None) -> str:
        """Send ``register(hash, cid)``; returns the transaction hash without waiting for it."""
        ...

    def submit_many(self, items: list[tuple[str, str]]) -> list[str | ChainError]:
        """Send ``register`` for each (sha256, cid); per item the transaction hash or the error."""
        ...

    def replace(self, tx_hash: str) -> str | None:
        """Send a stuck transaction again with a higher fee; None if there is nothing to replace."""
        ...

    def outcomes(self, tx_hashes: list[str]) -> list[TxOutcome | None]:
        """The outcome of each transaction (None: not mined, or unknown)."""
        ...

    def known(self, tx_hashes: list[str]) -> list[bool]:
        """Whether the node knows each transaction (mined or waiting in its pool)."""
        ...

    def is_deployed(self) -> bool:
        """True if there is contract code at the registry address."""
        ...

    def outcome(self, tx_hash: str) -> TxOutcome | None:
        """The outcome of one transaction (None: not mined, or unknown)."""
        ...

    def is_known(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction."""
        ...

    def resync_nonce(self) -> None:
        """Read the account's nonce from the chain again (after a failure)."""
        ...

    def next_nonce(self) -> int:
        """The nonce the next transaction will use."""
        ...

    def submit_batch(self, root_hex: str, leaves_cid: str, count: int) -> str:
        """Send ``anchorBatch(root, leavesCid, count)``; returns the transaction hash."""
        ...

    def block_number(self) -> int:
        """The chain's latest block number."""
        ...
