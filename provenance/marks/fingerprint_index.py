"""The fingerprint index: records' fingerprint codes in memory, searched by Hamming distance.

``FingerprintIndex`` searches all entries by Hamming distance with multi-index hashing (Norouzi et
al.): each code is cut into 3 substrings of 22/21/21 interleaved bits; two codes within 8 bits agree
to within 2 bits on at least one substring (pigeonhole), so probing every key within 2 bits of each
query substring finds every entry within 8 bits, exactly. faiss' binary indexes were measured on the
same 17M codes and are much slower on one core (flat: ~300 ms per lookup of 26 codes; its multi-hash
index ~150 ms on 2M codes only), see ``fingerprint_bench``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from provenance.marks.fingerprint_codes import KINDS, MAX_DISTANCE, SCHEMES, Fingerprint, ImageFingerprints


@dataclass(frozen=True)
class Candidate:
    """A record whose fingerprints came within the threshold of the query's.

    ``matches`` counts the record's stored entries within the threshold, ``distance`` is the best
    of them (bits of 64) and ``matched_kind`` the kind of that best stored entry. Only a candidate:
    the caller confirms it (alignment, watermark) before it says anything about the upload.
    """

    record_id: str
    distance: int
    matched_kind: str
    matches: int


class FingerprintRows(Protocol):
    """What ``FingerprintIndex.sync`` needs from the repository (``RecordRepository`` has it)."""

    def fingerprints_since(self, cursor: int, limit: int) -> Sequence[tuple[int, str, str, bytes]]:
        """Up to ``limit`` rows (row id, record id, scheme, packed codes) with a row id above ``cursor``."""
        ...


# Substrings of 22/21/21 bits, interleaved (bit p goes to table p % 3): neighbouring DCT coefficients
# are correlated (the DC bit is almost always 1), so contiguous substrings would crowd a few buckets.
_TABLES = 3
_TABLE_BITS = [list(range(t, 64, _TABLES)) for t in range(_TABLES)]


def _byte_luts(bits: list[int]) -> np.ndarray:
    """(8, 256) table: the substring bits that each value of each byte of a code contributes."""
    lut = np.zeros((8, 256), np.uint32)
    for j, p in enumerate(bits):
        byte, bit = divmod(p, 8)
        lut[byte, (np.arange(256) >> bit) & 1 == 1] |= np.uint32(1 << j)
    return lut


_LUTS = [_byte_luts(bits) for bits in _TABLE_BITS]


def _substrings(codes: np.ndarray, table: int) -> np.ndarray:
    as_bytes = codes.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    lut = _LUTS[table]
    key = lut[0][as_bytes[:, 0]]
    for b in range(1, 8):
        key |= lut[b][as_bytes[:, b]]
    return key


def _flip_masks(width: int, flips: int) -> np.ndarray:
    masks = [0]
    for n in range(1, flips + 1):
        masks += [sum(1 << i for i in combo) for combo in itertools.combinations(range(width), n)]
    return np.array(masks, np.uint32)


class _MultiIndexHash:
    """Exact Hamming range search over a fixed set of codes (entry ids 0..n-1).

    Per table: the codes sorted by their substring, the entry ids in that order, and where each
    substring value's run starts. A query reads one contiguous run per probe.
    """

    def __init__(self, codes: np.ndarray) -> None:
        self.size = len(codes)
        self.tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for t, bits in enumerate(_TABLE_BITS):
            keys = _substrings(codes, t)
            order = np.argsort(keys, kind="stable").astype(np.int32 if len(codes) < 2**31 else np.int64)
            starts = np.zeros((1 << len(bits)) + 1, np.int64)
            np.cumsum(np.bincount(keys, minlength=1 << len(bits)), out=starts[1:])
            self.tables.append((codes[order], order, starts))

    def search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, entry id, distance) of every entry within ``radius`` bits (duplicates possible)."""
        flips = radius // _TABLES  # pigeonhole: one substring is within this many bits
        found_q, found_e, found_d = [], [], []
        for t, (sorted_codes, order, starts) in enumerate(self.tables):
            probes = _substrings(queries, t)[:, None] ^ _masks(len(_TABLE_BITS[t]), flips)[None, :]
            begin, end = starts[probes], starts[probes + 1]
            lengths = (end - begin).ravel()
            total = int(lengths.sum())
            if total == 0:
                continue
            # Positions of all runs, concatenated: each run's start repeated, plus 0..len-1.
            offsets = np.cumsum(lengths) - lengths
            positions = np.repeat(begin.ravel() - offsets, lengths) + np.arange(total)
            query_of = np.repeat(np.repeat(np.arange(len(queries)), probes.shape[1]), lengths)
            distance = np.bitwise_count(sorted_codes[positions] ^ queries[query_of])
            hit = distance <= radius
            found_q.append(query_of[hit])
            found_e.append(order[positions[hit]])
            found_d.append(distance[hit])
        if not found_q:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        return np.concatenate(found_q), np.concatenate(found_e).astype(np.int64), np.concatenate(found_d)


_MASK_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _masks(width: int, flips: int) -> np.ndarray:
    key = (width, flips)
    if key not in _MASK_CACHE:
        _MASK_CACHE[key] = _flip_masks(width, flips)
    return _MASK_CACHE[key]


class FingerprintIndex:
    """Records' fingerprints in memory, searched by Hamming distance; thread-safe.

    Entries live in append-only arrays. The oldest ones are covered by a multi-index hash (exact for
    any radius; probing cost grows with radius // 3); the newest (at most ``delta_limit``) are
    compared one by one, until a rebuild folds them in. Rebuilds run on a background thread while
    searches go on with the previous hash.

    ``sync(repository)`` loads the rows added since the last sync. Several service instances share
    one database, and a row's id is taken at insert but seen at commit, so a slow transaction can
    commit an id below one already seen: each sync reads again from ``lag`` ids back and skips the
    rows it already has.
    """

    def __init__(self, *, max_distance: int = MAX_DISTANCE, delta_limit: int = 16_384, lag: int = 1_000) -> None:
        self.max_distance = max_distance
        self.delta_limit = delta_limit
        self.lag = lag
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._codes = np.zeros(1024, np.uint64)
        self._owner = np.zeros(1024, np.int32)  # entry -> record number
        self._kind = np.zeros(1024, np.uint8)  # entry -> index in KINDS
        self._size = 0
        self._record_ids: list[str] = []
        self._hash: _MultiIndexHash | None = None
        self._rebuilding: threading.Thread | None = None
        self._cursor = 0  # highest row id synced
        self._seen_rows: set[int] = set()  # row ids within ``lag`` of the cursor that are loaded
        self._added_here: set[str] = set()  # records added by ``add`` that sync has not seen yet

    # --- writes ---------------------------------------------------------------------------------
    def add(self, record_id: str, fingerprints: ImageFingerprints) -> None:
        """Index a record's fingerprints (sync will not add them a second time)."""
        with self._lock:
            self._append(record_id, fingerprints.codes, [KINDS.index(k) for k in fingerprints.kinds])
            self._added_here.add(record_id)
        self._maybe_rebuild()

    def sync(self, repository: FingerprintRows, *, batch: int = 10_000) -> int:
        """Load the fingerprint rows added since the last sync; returns how many records were added.

        Reads the database without holding the index lock, so searches go on meanwhile; syncs run
        one at a time. Call it periodically (a background loop) rather than before every lookup.
        """
        added = 0
        with self._sync_lock:
            cursor = self._resume_from()
            while True:
                rows = repository.fingerprints_since(cursor, batch)
                fresh: list[tuple[str, bytes]] = []
                with self._lock:
                    for row_id, record_id, scheme, packed in rows:
                        if row_id in self._seen_rows:
                            continue
                        self._seen_rows.add(row_id)
                        if scheme not in SCHEMES:  # another detector's layout: needs a re-fingerprint
                            continue
                        if record_id in self._added_here:  # this instance indexed it when certifying
                            self._added_here.discard(record_id)
                            continue
                        fresh.append((record_id, packed))
                    self._append_packed(fresh)
                    if rows:
                        cursor = max(cursor, rows[-1][0])
                        self._cursor = max(self._cursor, cursor)
                added += len(fresh)
                if len(rows) < batch:
                    break
            with self._lock:
                floor = self._cursor - self.lag
                self._seen_rows = {r for r in self._seen_rows if r > floor}
        backlog = self._maybe_rebuild()
        if backlog is not None and self._size - (self._hash.size if self._hash else 0) > 8 * self.delta_limit:
            # A bulk load (first sync after start): searching that many unhashed entries one by one
            # would take seconds per lookup, so the caller waits for the hash instead.
            backlog.join()
        return added

    def _resume_from(self) -> int:
        """Where the next read starts: the cursor, or just below the oldest id in the lag window not seen.

        Ids are dense while nothing rolls back, so this is usually the cursor itself and a sync reads
        only new rows; a gap (a transaction still open, or rolled back) is read again until it falls
        ``lag`` ids behind.
        """
        with self._lock:
            cursor, seen = self._cursor, self._seen_rows
            for row_id in range(max(1, cursor - self.lag + 1), cursor + 1):
                if row_id not in seen:
                    return row_id - 1
            return cursor

    def _append_packed(self, rows: list[tuple[str, bytes]]) -> None:
        """Append many stored rows at once: bulk loads are dominated by per-row overhead otherwise."""
        if not rows:
            return
        counts = [len(packed) // 9 for _, packed in rows]
        kinds = np.frombuffer(b"".join(packed[:n] for (_, packed), n in zip(rows, counts, strict=True)), np.uint8)
        codes = np.frombuffer(b"".join(packed[n:] for (_, packed), n in zip(rows, counts, strict=True)), ">u8")
        owners = np.repeat(np.arange(len(self._record_ids), len(self._record_ids) + len(rows)), counts)
        self._reserve(len(codes))
        end = self._size + len(codes)
        self._codes[self._size : end] = codes
        self._owner[self._size : end] = owners
        self._kind[self._size : end] = kinds
        self._size = end
        self._record_ids.extend(record_id for record_id, _ in rows)

    def _reserve(self, n: int) -> None:
        if self._size + n > len(self._codes):
            capacity = max(2 * len(self._codes), self._size + n)
            # New arrays, not resized ones: a search may still hold the old ones.
            self._codes = _grown(self._codes, capacity)
            self._owner = _grown(self._owner, capacity)
            self._kind = _grown(self._kind, capacity)

    def _append(self, record_id: str, codes: np.ndarray, kinds: Sequence[int]) -> None:
        n = len(codes)
        self._reserve(n)
        self._codes[self._size : self._size + n] = codes
        self._owner[self._size : self._size + n] = len(self._record_ids)
        self._kind[self._size : self._size + n] = kinds
        self._size += n
        self._record_ids.append(record_id)

    def rebuild(self, *, wait: bool = True) -> None:
        """Fold every entry into the multi-index hash now (the benchmark and tests call it)."""
        self._maybe_rebuild(force=True)
        if wait:
            thread = self._rebuilding
            if thread is not None:
                thread.join()

    def _maybe_rebuild(self, force: bool = False) -> threading.Thread | None:
        """Start a rebuild when the unhashed entries exceed ``delta_limit``; returns the running one, if any."""
        with self._lock:
            covered = self._hash.size if self._hash else 0
            if self._rebuilding is not None or self._size == covered:
                return self._rebuilding
            if not force and self._size - covered <= self.delta_limit:
                return None
            codes = self._codes[: self._size]  # a view: entries below size never change
            thread = threading.Thread(target=self._build, args=(codes,), name="fingerprint-index", daemon=True)
            self._rebuilding = thread
        thread.start()
        return thread

    def _build(self, codes: np.ndarray) -> None:
        try:
            built = _MultiIndexHash(codes)
            with self._lock:
                self._hash = built
        finally:
            with self._lock:
                self._rebuilding = None

    # --- reads ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of records indexed."""
        return len(self._record_ids)

    @property
    def entries(self) -> int:
        """Number of codes indexed (all records)."""
        return self._size

    @property
    def cursor(self) -> int:
        """The highest fingerprint row id synced."""
        return self._cursor

    def close(self) -> None:
        """Nothing to release: the arrays go with the object (``FingerprintBackend`` asks for it)."""

    def search(
        self, query: ImageFingerprints | Sequence[Fingerprint], k: int = 8, max_distance: int | None = None
    ) -> list[Candidate]:
        """The ``k`` best records within ``max_distance`` bits of any query code.

        Ranked by how many of the record's stored entries matched, then by the best distance: one
        close code can be chance, several codes of one record matching the query's rarely are.
        """
        radius = self.max_distance if max_distance is None else max_distance
        entries = query.entries if isinstance(query, ImageFingerprints) else tuple(query)
        if not entries:
            return []
        queries = np.array([e.code for e in entries], dtype=np.uint64)
        with self._lock:  # a consistent snapshot; the arrays below it only grow
            hashed, size = self._hash, self._size
            codes, owner, kind, record_ids = self._codes, self._owner, self._kind, self._record_ids
            covered = hashed.size if hashed else 0
        found_e: list[np.ndarray] = []
        found_d: list[np.ndarray] = []
        if hashed is not None:
            _, e, d = hashed.search(queries, radius)
            found_e.append(e)
            found_d.append(d)
        if size > covered:  # the newest entries, one by one
            distance = np.bitwise_count(codes[covered:size][None, :] ^ queries[:, None])
            near = distance <= radius
            found_e.append(np.nonzero(near)[1] + covered)
            found_d.append(distance[near])
        if not found_e:
            return []
        entry = np.concatenate(found_e)
        dist = np.concatenate(found_d).astype(np.int64)
        if not len(entry):
            return []
        # Best distance per stored entry, then per record: matches and best distance.
        order = np.lexsort((dist, entry))
        entry, dist = entry[order], dist[order]
        first = np.ones(len(entry), bool)
        first[1:] = entry[1:] != entry[:-1]
        entry, dist = entry[first], dist[first]
        records = owner[entry]
        best: dict[int, tuple[int, int, int]] = {}  # record -> (matches, distance, kind)
        for r, d, kd in zip(records.tolist(), dist.tolist(), kind[entry].tolist(), strict=True):
            seen = best.get(r)
            if seen is None:
                best[r] = (1, d, kd)
            else:
                best[r] = (seen[0] + 1, d, kd) if d < seen[1] else (seen[0] + 1, seen[1], seen[2])
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[1][1], item[0]))[:k]
        return [Candidate(record_ids[r], d, KINDS[kd], n) for r, (n, d, kd) in ranked]


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros(capacity, array.dtype)
    grown[: len(array)] = array
    return grown
