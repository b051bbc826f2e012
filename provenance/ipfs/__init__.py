"""Stage 5, IPFS: content addressing and pinning behind one small interface.

``ContentStore`` is what the rest of the service sees. Two implementations: the embedded
``LocalBlockstore`` (blocks in the data dir, served by the read-only gateway) and ``KuboClient``
(Kubo's HTTP RPC, when ``IPFS_API_URL`` is set). Both produce the CID Kubo prints for
``ipfs add --cid-version=1`` of the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AddResult:
    """What pinning some bytes gave: their CID, their size, and whether this call pinned them."""

    cid: str
    size: int
    created: bool  # False when the content was already pinned (rollback must not remove it)


class ContentStore(Protocol):
    """Pin bytes, check, fetch and unpin them by CID."""

    def add(self, data: bytes) -> AddResult:
        """Pin the bytes (a no-op when they are pinned already)."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the content is pinned here."""
        ...

    def cat(self, cid: str) -> bytes:
        """The bytes of a CID (``NotFoundError`` when absent)."""
        ...

    def remove(self, cid: str) -> None:
        """Unpin a CID (a no-op when it is not pinned)."""
        ...

    @property
    def description(self) -> str:
        """One line saying which store this is (logs, ``/healthz``)."""
        ...
