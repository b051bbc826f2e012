"""Stage 7, chain: the ProvenanceRegistry contract behind a small interface.

``Registry`` is what the rest of the service sees: register a content hash with its CID, look a
hash up live, and find out what became of a transaction. ``Web3Registry`` implements it over any
EVM JSON-RPC endpoint; ``AnvilNode`` runs the embedded dev chain.

The registry is also the trust root a verifier pins (chain id + address): its owner publishes the
writers (with block ranges), the ECDSA signing keys (valid from publication to revocation) and the
C2PA trust anchors' fingerprints. ``RegistryReader`` reads all of it with only an RPC URL;
``RegistryAdmin`` is the owner's side.
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


class Registry(Protocol):
    # Read-only for the callers: properties, so an implementation may narrow the types (checksummed addresses).
    @property
    def chain_id(self) -> int: ...

    @property
    def address(self) -> str: ...

    @property
    def rpc_url(self) -> str: ...

    def submit(self, sha256_hex: str, cid: str, nonce: int | None = None) -> str: ...

    def submit_many(self, items: list[tuple[str, str]]) -> list[str | ChainError]: ...

    def replace(self, tx_hash: str) -> str | None: ...

    def outcomes(self, tx_hashes: list[str]) -> list[TxOutcome | None]: ...

    def known(self, tx_hashes: list[str]) -> list[bool]: ...

    def is_deployed(self) -> bool: ...

    def outcome(self, tx_hash: str) -> TxOutcome | None: ...

    def is_known(self, tx_hash: str) -> bool: ...

    def resync_nonce(self) -> None: ...

    def lookup(self, sha256_hex: str) -> Entry: ...

    def next_nonce(self) -> int: ...

    def submit_batch(self, root_hex: str, leaves_cid: str, count: int) -> str: ...

    def batch(self, root_hex: str) -> BatchEntry: ...

    def is_registered(self, sha256_hex: str, root_hex: str | None = None, proof: list[str] | None = None) -> bool: ...

    def block_number(self) -> int: ...

    def writer_at(self, address: str, block: int) -> bool: ...

    def key_status(self, key_id_hex: str) -> KeyStatus: ...

    def key_valid_at(self, key_id_hex: str, block: int) -> bool: ...

    def is_trust_anchor(self, fingerprint_hex: str) -> bool: ...

    def trust_anchors(self) -> list[str]: ...

    def owner(self) -> str: ...
