"""What every lineage kind shares: the registry key of a dataset root or a model digest, and creators' shares.

A dataset root and a model digest are registered on the same registry as certified images, under a key
derived with a domain tag: ``keccak256(tag || value)``. No image's SHA-256 can equal such a key by accident,
and a dataset's root can never be taken for a batch of certified images (those are anchored apart, with
``anchorBatch``), so a dataset item never reads as a certified image.
"""

from __future__ import annotations

from typing import Annotated

from eth_utils import keccak, to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, field_validator

DATASET_TAG = b"provenance.dataset.v1"
MODEL_TAG = b"provenance.model.v1"
MAX_BPS = 10_000  # basis points: 10,000 = 100%


def registry_key(tag: bytes, value_hex: str) -> str:
    """The 32-byte registry key (hex, no 0x) of a dataset root or model digest (hex, with or without 0x)."""
    value = bytes.fromhex(value_hex.removeprefix("0x"))
    if len(value) != 32:
        raise ValueError("a dataset root or a model digest is 32 bytes")
    return keccak(tag + value).hex()


def dataset_key(root_hex: str) -> str:
    """The registry key of a dataset's Merkle root."""
    return registry_key(DATASET_TAG, root_hex)


def model_key(digest_hex: str) -> str:
    """The registry key of a model's digest."""
    return registry_key(MODEL_TAG, digest_hex)


class Creator(BaseModel):
    """Someone whose work is in a dataset or a model, and their share of royalties, in basis points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(description="Ethereum address that receives the share (checksummed on input).")
    bps: Annotated[int, Field(ge=1, le=MAX_BPS, description="Share in basis points (10000 = 100%).")]
    name: str | None = Field(default=None, max_length=200, description="Display name (text, never markup).")

    @field_validator("address")
    @classmethod
    def _checksummed(cls, value: str) -> str:
        try:
            return to_checksum_address(value)
        except ValueError:
            raise ValueError(f"not an Ethereum address: {value[:60]!r}") from None


def check_shares(creators: list[Creator]) -> list[Creator]:
    """The creators, refused when their shares add up to more than 100% or an address repeats."""
    if sum(c.bps for c in creators) > MAX_BPS:
        raise ValueError("creators' shares add up to more than 10000 basis points (100%)")
    addresses = [c.address for c in creators]
    if len(set(addresses)) != len(addresses):
        raise ValueError("a creator's address appears twice")
    return creators
