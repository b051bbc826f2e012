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
    cid: str
    size: int
    created: bool  # False when the content was already pinned (rollback must not remove it)


class ContentStore(Protocol):
    """Pin bytes, check, fetch and unpin them by CID."""

    def add(self, data: bytes) -> AddResult: ...

    def has(self, cid: str) -> bool: ...

    def cat(self, cid: str) -> bytes: ...

    def remove(self, cid: str) -> None: ...

    @property
    def description(self) -> str: ...
