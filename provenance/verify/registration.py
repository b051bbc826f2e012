"""The registration check: one reading of the registry for both verifiers.

A file counts as registered by the operator when the registry (whichever ``ChainReader`` reads it:
the service's live client, or the pinned, cross-checked reader of the bundle verifier) says all of:

- the hash is registered on its own with the expected CID, or it is a leaf of an anchored batch
  root, proven both by recomputing the Merkle proof here and by the contract's ``isRegistered``;
- the registrant was an allowed writer of the registry in the registration block;
- the signing key was published by the owner, and not revoked, in that block.

``check_registration`` reads those facts and returns them as a ``Registration``; each verifier
turns them into its own words (the online verifier's ``chain`` check, the bundle's reasons).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from provenance.anchoring.merkle import verify_proof
from provenance.chain import ChainReader


class KeyAtRegistration(BaseModel):
    """The signing key as the registry lists it, judged at the registration block."""

    key_id: str
    published: bool
    valid_from_block: int | None = None
    revoked_at_block: int | None = None
    valid_at_registration: bool = Field(description="Published and not yet revoked in the registration block.")


class Registration(BaseModel):
    """What the registry says about one content hash, read at one point of the chain."""

    mode: Literal["single", "batch"]
    found: bool = Field(
        description="single: the hash has an entry; batch: the root is anchored and the contract accepts the proof."
    )
    registrant: str | None = None
    block_number: int | None = None
    timestamp: int | None = None
    cid: str | None = Field(default=None, description="single: the CID the registry holds for the hash.")
    cid_matches: bool | None = Field(default=None, description="single: None when no CID was expected.")
    root_anchored: bool | None = None
    proof_valid: bool | None = Field(default=None, description="batch: the Merkle proof recomputed here.")
    contract_says_registered: bool | None = Field(default=None, description="batch: the contract's isRegistered.")
    leaves_cid: str | None = None
    registrant_was_writer: bool | None = Field(default=None, description="None: nothing found to ask about.")
    key: KeyAtRegistration | None = Field(default=None, description="None: no key given, or nothing found.")

    @property
    def registered(self) -> bool:
        """Found, with the expected CID (single) or a proof that also checks here (batch)."""
        return self.found and self.cid_matches is not False and self.proof_valid is not False

    @property
    def holds(self) -> bool:
        """Registered, by a writer of the registry, with a key valid at that block: the operator's registration."""
        key_ok = self.key is not None and self.key.valid_at_registration
        return self.registered and bool(self.registrant_was_writer) and key_ok


def _hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def check_registration(
    reader: ChainReader,
    sha256_hex: str,
    *,
    key_id: str | None = None,
    cid: str | None = None,
    batch_root: str | None = None,
    proof: list[str] | None = None,
) -> Registration:
    """Read the registration of ``sha256_hex`` through ``reader``: the entry, its writer, its key.

    With ``batch_root`` the hash is looked for as a leaf of that root (``proof``: its siblings, hex);
    else as an entry of its own, whose CID is compared with ``cid`` when one is given. The writer
    and the key (``key_id``, when given) are read at the registration block whenever an entry was
    found there. Chain errors propagate: the caller decides what an unreadable chain means.
    """
    if batch_root is not None:
        siblings = list(proof or [])
        proof_ok = verify_proof(_hex_bytes(sha256_hex), [_hex_bytes(p) for p in siblings], _hex_bytes(batch_root))
        entry = reader.batch(batch_root)
        on_chain = reader.is_registered(sha256_hex, batch_root, siblings)  # the contract checks the proof too
        found = Registration(
            mode="batch",
            found=entry.anchored and on_chain,
            registrant=entry.registrant,
            block_number=entry.block_number,
            timestamp=entry.timestamp,
            root_anchored=entry.anchored,
            proof_valid=proof_ok,
            contract_says_registered=on_chain,
            leaves_cid=entry.leaves_cid,
        )
    else:
        single = reader.lookup(sha256_hex)
        found = Registration(
            mode="single",
            found=single.registered,
            registrant=single.registrant,
            block_number=single.block_number,
            timestamp=single.timestamp,
            cid=single.cid,
            cid_matches=None if cid is None else single.cid == cid,
        )
    block, registrant = found.block_number, found.registrant
    if found.found and block is not None and registrant:
        # Registered by an address the owner allowed, with a key the owner published, both at that block.
        found.registrant_was_writer = reader.writer_at(registrant, block)
        if key_id is not None:
            status = reader.key_status(key_id)
            found.key = KeyAtRegistration(
                key_id=key_id,
                published=status.published,
                valid_from_block=status.valid_from,
                revoked_at_block=status.revoked_at,
                valid_at_registration=reader.key_valid_at(key_id, block),
            )
    return found
