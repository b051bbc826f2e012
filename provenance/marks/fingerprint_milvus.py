"""The Milvus fingerprint back end: every record's codes in one shared collection, searched by Hamming range.

One row per stored code: the primary key ``<record id>/<position>`` (so writing a record twice, from two
instances or from ``add`` and ``sync``, changes nothing), the record id, the code's position in the record's
fingerprints, its kind, and the code as a 64-bit ``BINARY_VECTOR`` (big-endian bytes) under a ``BIN_FLAT``
index with the ``HAMMING`` metric. A lookup is one range search of all the query's codes (Milvus keeps
``range_filter <= distance < radius``, so the radius sent is ``max_distance + 1``) at Strong consistency,
so a record one instance wrote is seen by every other one at once. The results are ranked exactly as
``FingerprintIndex`` ranks its own: the best distance per stored code, then per record the number of codes
matched and the best distance; ties go to the smaller record id (the memory index breaks them by load order).

``sync`` writes into the collection the database rows that are not in it yet (records certified while Milvus
was unreachable, or before the switch to this back end). The highest row id written is kept in a one-row
side collection that all instances share, so an instance that starts reads only what is new, plus ``lag``
ids back (a slow transaction commits an id below one already seen).

pymilvus (and milvus-lite for a local file) is the optional ``milvus`` extra; nothing imports it unless
this back end is chosen.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from provenance.errors import ConfigurationError
from provenance.marks.fingerprint_codes import KINDS, MAX_DISTANCE, SCHEMES, Fingerprint, ImageFingerprints
from provenance.marks.fingerprint_index import Candidate, FingerprintRows

DEFAULT_COLLECTION = "provenance_fingerprints"
# Stored codes returned per query code. The ranking equals the memory index's while no query code has more
# stored codes than this within the radius (one picture certified hundreds of times); past it the furthest are
# dropped. Measured on milvus-lite, 196k codes, 98 query codes: 16,384 (Milvus' largest) 194 ms, 256 38 ms.
PER_CODE_LIMIT = 512
_ID_CHUNK = 1_000  # record ids per membership query (the filter expression holds them all)


def _client(uri: str, token: str | None) -> Any:
    """A pymilvus client for a server URL or a milvus-lite file (a path ending in ``.db``)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise ConfigurationError(
            "PROVENANCE_FINGERPRINT_BACKEND=milvus needs pymilvus: pip install 'provenance[milvus]'."
        ) from exc
    if not uri.startswith(("http://", "https://", "tcp://", "unix:")) and not uri.endswith(".db"):
        raise ConfigurationError(
            "PROVENANCE_MILVUS_URI must be http(s)://host:19530 or a milvus-lite file path ending in .db."
        )
    with warnings.catch_warnings():
        # milvus-lite imports pkg_resources, which warns about its own deprecation on every start.
        warnings.simplefilter("ignore", UserWarning)
        try:
            return MilvusClient(uri=uri, token=token or "")
        except ConfigurationError:
            raise
        except Exception as exc:  # pymilvus raises its own exception types, with the cause in the message
            raise ConfigurationError(
                f"Milvus at PROVENANCE_MILVUS_URI cannot be opened: {type(exc).__name__}."
            ) from exc


class MilvusFingerprintIndex:
    """Records' fingerprints in a Milvus collection that every service instance shares (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        collection: str = DEFAULT_COLLECTION,
        token: str | None = None,
        max_distance: int = MAX_DISTANCE,
        lag: int = 1_000,
        per_code_limit: int = PER_CODE_LIMIT,
    ) -> None:
        self.max_distance = max_distance
        self.collection = collection
        self.cursor_collection = f"{collection}_cursor"
        self.lag = lag
        self.per_code_limit = per_code_limit
        self._client = _client(uri, token)
        self._sync_lock = threading.Lock()
        self._ensure_collections()

    # --- schema ---------------------------------------------------------------------------------
    def _ensure_collections(self) -> None:
        from pymilvus import DataType

        client = self._client
        if not client.has_collection(self.collection):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=96)
            schema.add_field("record", DataType.VARCHAR, max_length=80)
            schema.add_field("entry", DataType.INT16)
            schema.add_field("kind", DataType.INT8)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=64)
            index = client.prepare_index_params()
            index.add_index("code", index_type="BIN_FLAT", metric_type="HAMMING")
            self._create(self.collection, schema, index)
        if not client.has_collection(self.cursor_collection):
            # Milvus wants a vector field in every collection: a 2-d placeholder, never searched.
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("pk", DataType.INT64, is_primary=True)
            schema.add_field("row", DataType.INT64)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
            index = client.prepare_index_params()
            index.add_index("unused", index_type="FLAT", metric_type="L2")
            self._create(self.cursor_collection, schema, index)
        client.load_collection(self.collection)
        client.load_collection(self.cursor_collection)

    def _create(self, name: str, schema: Any, index: Any) -> None:
        try:
            self._client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        except Exception:
            if not self._client.has_collection(name):  # another instance created it meanwhile: fine
                raise

    # --- writes ---------------------------------------------------------------------------------
    def add(self, record_id: str, fingerprints: ImageFingerprints) -> None:
        """Write a record's fingerprints into the shared collection (idempotent)."""
        self._upsert([(record_id, i, KINDS.index(e.kind), int(e.code)) for i, e in enumerate(fingerprints.entries)])

    def _upsert(self, rows: Sequence[tuple[str, int, int, int]]) -> None:
        """Rows of (record id, position, kind index, code)."""
        for start in range(0, len(rows), 10_000):
            chunk = rows[start : start + 10_000]
            data = [
                {"pk": f"{r}/{i}", "record": r, "entry": i, "kind": kd, "code": code.to_bytes(8, "big")}
                for r, i, kd, code in chunk
            ]
            self._client.upsert(self.collection, data)

    def insert_codes(self, record_ids: Sequence[str], codes: Any, kind: int) -> None:
        """Bulk load of new records (the benchmark): ``codes`` (records, n) uint64, every code of one ``kind``.

        A plain insert, not an upsert: only for records not in the collection yet.
        """
        per = codes.shape[1]
        data = [
            {"pk": f"{r}/{i}", "record": r, "entry": i, "kind": kind, "code": int(c).to_bytes(8, "big")}
            for r, row in zip(record_ids, codes, strict=True)
            for i, c in enumerate(row.tolist())
        ]
        for start in range(0, len(data), 50_000 // per * per):
            self._client.insert(self.collection, data[start : start + 50_000 // per * per])

    def sync(self, repository: FingerprintRows, *, batch: int = 10_000) -> int:
        """Write the database's fingerprint rows the collection lacks; returns how many records were written.

        Starts ``lag`` ids below the shared cursor; records already in the collection are skipped (one
        membership query per thousand rows), so instances syncing at the same time write little twice.
        """
        added = 0
        with self._sync_lock:
            stored = self._read_cursor()
            cursor = max(0, stored - self.lag)
            while True:
                rows = repository.fingerprints_since(cursor, batch)
                usable = [(record_id, packed) for _, record_id, scheme, packed in rows if scheme in SCHEMES]
                present = self._present({record_id for record_id, _ in usable})
                fresh: list[tuple[str, int, int, int]] = []
                written: set[str] = set()
                for record_id, packed in usable:
                    if record_id in present or record_id in written:
                        continue
                    written.add(record_id)
                    n = len(packed) // 9
                    for i in range(n):
                        code = int.from_bytes(packed[n + 8 * i : n + 8 * i + 8], "big")
                        fresh.append((record_id, i, packed[i], code))
                self._upsert(fresh)
                added += len(written)
                if rows:
                    cursor = max(cursor, rows[-1][0])
                if len(rows) < batch:
                    break
            if cursor > stored:
                self._client.upsert(self.cursor_collection, [{"pk": 0, "row": cursor, "unused": [0.0, 0.0]}])
        return added

    def _read_cursor(self) -> int:
        rows = self._client.query(self.cursor_collection, filter="pk == 0", output_fields=["row"])
        return int(rows[0]["row"]) if rows else 0

    def _present(self, record_ids: Iterable[str]) -> set[str]:
        """Those of ``record_ids`` that have rows in the collection."""
        ids = sorted(record_ids)
        present: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            chunk = ids[start : start + _ID_CHUNK]
            rows = self._client.query(
                self.collection,
                filter=f"entry == 0 and record in {json.dumps(chunk)}",
                output_fields=["record"],
                limit=len(chunk),
            )
            present.update(str(row["record"]) for row in rows)
        return present

    # --- reads ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of records indexed."""
        return self._count("entry == 0")

    @property
    def entries(self) -> int:
        """Number of codes indexed (all records)."""
        return self._count("")

    def _count(self, expression: str) -> int:
        rows = self._client.query(self.collection, filter=expression, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def search(
        self, query: ImageFingerprints | Sequence[Fingerprint], k: int = 8, max_distance: int | None = None
    ) -> list[Candidate]:
        """The ``k`` best records within ``max_distance`` bits of any query code, ranked as ``FingerprintIndex`` ranks.

        One range search of all the query's codes; then the best distance per stored code, and per record
        the number of its codes matched, the best distance and the kind of the code that has it (the first
        in the record's order on a tie, as the memory index picks it).
        """
        radius = self.max_distance if max_distance is None else max_distance
        entries = query.entries if isinstance(query, ImageFingerprints) else tuple(query)
        if not entries:
            return []
        hits = self._client.search(
            self.collection,
            data=[int(e.code).to_bytes(8, "big") for e in entries],
            anns_field="code",
            limit=self.per_code_limit,
            output_fields=["record", "entry", "kind"],
            search_params={"metric_type": "HAMMING", "params": {"radius": radius + 1, "range_filter": 0}},
            consistency_level="Strong",
        )
        nearest: dict[tuple[str, int], tuple[int, int]] = {}  # (record, position) -> (distance, kind)
        for per_code in hits:
            for hit in per_code:
                distance = round(float(hit["distance"]))
                if distance > radius:  # the engine's bound is exclusive; keep the memory index's inclusive one
                    continue
                entity = hit["entity"]
                key = (str(entity["record"]), int(entity["entry"]))
                seen = nearest.get(key)
                if seen is None or distance < seen[0]:
                    nearest[key] = (distance, int(entity["kind"]))
        best: dict[str, tuple[int, int, int, int]] = {}  # record -> (matches, distance, position, kind)
        for (record, position), (distance, kind) in nearest.items():
            held = best.get(record)
            if held is None:
                best[record] = (1, distance, position, kind)
            elif (distance, position) < (held[1], held[2]):
                best[record] = (held[0] + 1, distance, position, kind)
            else:
                best[record] = (held[0] + 1, held[1], held[2], held[3])
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[1][1], item[0]))[:k]
        return [Candidate(record, d, KINDS[kind], n) for record, (n, d, _, kind) in ranked]

    def close(self) -> None:
        """Close the client (milvus-lite's server stays up for other clients of the same file in this process)."""
        self._client.close()
