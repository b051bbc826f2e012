"""The fingerprint search interface, and the back ends behind it.

Certify adds a record's codes (``add``), verify asks for the records near an upload's codes (``search``), and
``sync`` catches up with rows other instances stored in the database. Two back ends implement it:

- ``memory`` (the embedded default): ``provenance.marks.fingerprint_index.FingerprintIndex``, an exact
  multi-index hash in this process. Every instance holds every record's codes, so one machine's memory caps
  the index and each instance loads a full copy at start.
- ``milvus``: ``provenance.marks.fingerprint_milvus.MilvusFingerprintIndex``, the codes in a Milvus collection
  of 64-bit binary vectors searched by Hamming range search. Instances share the collection (a record
  certified on one is found by the others at once); a Milvus cluster shards and replicates it. Its embedded
  form is milvus-lite (a local ``.db`` file, one process at a time).

Both rank the same way: records by how many of their stored codes came within the radius, then by the best
distance; ``Candidate`` is the one result type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from provenance.marks.fingerprint_codes import Fingerprint, ImageFingerprints
from provenance.marks.fingerprint_index import Candidate, FingerprintRows

BackendName = Literal["memory", "milvus"]


@runtime_checkable
class FingerprintBackend(Protocol):
    """Where records' fingerprint codes are kept and searched by Hamming distance."""

    max_distance: int

    def add(self, record_id: str, fingerprints: ImageFingerprints) -> None:
        """Index a record's fingerprints; searchable as soon as this returns."""
        ...

    def sync(self, repository: FingerprintRows, *, batch: int = 10_000) -> int:
        """Catch up with the fingerprint rows stored since the last sync; returns how many records were added."""
        ...

    def search(
        self, query: ImageFingerprints | Sequence[Fingerprint], k: int = 8, max_distance: int | None = None
    ) -> list[Candidate]:
        """The ``k`` best records within ``max_distance`` bits of any query code (most matches, then best distance)."""
        ...

    def __len__(self) -> int:
        """Number of records indexed."""
        ...

    @property
    def entries(self) -> int:
        """Number of codes indexed (all records)."""
        ...

    def close(self) -> None:
        """Release connections and threads (the index is not used afterwards)."""
        ...
