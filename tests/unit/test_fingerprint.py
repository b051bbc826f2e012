"""Fingerprints: the ISCC image code, patch codes, the Hamming index, storage and sync."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import iscc_lib
import numpy as np
import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from benchmarks.fingerprint import EDITS, crop, rotate_black, rotate_inner
from provenance.db.models import Record
from provenance.db.repository import RecordRepository, new_record_id
from provenance.db.session import alembic_config, make_engine, migrate, session_factory
from provenance.marks.fingerprint import (
    ALG,
    KIND_FINE,
    KIND_ISCC,
    KIND_KEYPOINT,
    MAX_DISTANCE,
    SCHEME,
    SCHEME_V1,
    Fingerprint,
    Fingerprinter,
    FingerprintIndex,
    ImageFingerprints,
    code_to_iscc,
    image_code_bits,
    iscc_thumbnail,
    keypoint_patches,
)
from tests.conftest import PHOTOS, photo

# Indexed with the test photos, so every lookup has wrong records to pick.
DISTRACTORS = ["hubble_deep_field.jpg", "ihc.png", "camera.png", "horse.png", "coins.png", "moon.png"]
# Never indexed: must get no candidate at all.
UNRELATED = ["retina.jpg", "page.png", "brick.png", "grass.png", "cell.png", "logo.png", "text.png"]


@pytest.fixture(scope="module")
def fingerprinter() -> Fingerprinter:
    return Fingerprinter()


@pytest.fixture(scope="module")
def index(fingerprinter: Fingerprinter) -> FingerprintIndex:
    built = FingerprintIndex()
    for name in PHOTOS + DISTRACTORS:
        built.add(name, fingerprinter.compute(photo(name)))
    return built


# --- the ISCC image code -------------------------------------------------------------------------
def test_iscc_code_is_the_reference_implementations(fingerprinter: Fingerprinter) -> None:
    """Same string as iscc-core (the reference, pure Python) on the thumbnail the ISCC spec prescribes."""
    iscc_core = pytest.importorskip("iscc_core")
    for name in PHOTOS:
        rgb = photo(name)
        fingerprints = fingerprinter.compute(rgb)
        reference = iscc_core.gen_image_code_v0(iscc_thumbnail(rgb).ravel().tolist())["iscc"]
        assert fingerprints.iscc == reference
        assert fingerprints.iscc.startswith("ISCC:EE")  # content code, image, 64 bits
        assert code_to_iscc(fingerprints.entries[0].code) == fingerprints.iscc
        assert fingerprints.soft_binding() == {"alg": ALG, "blocks": [{"scope": {}, "value": fingerprints.iscc}]}


def test_batched_code_is_iscc_libs_bit_for_bit() -> None:
    """The NumPy code used for patches gives iscc-lib's digest, on noise and on real patches."""
    rng = np.random.default_rng(1)
    thumbs = list(rng.integers(0, 256, (200, 32, 32), dtype=np.uint8))
    _, patches = keypoint_patches(np.asarray(photo("astronaut.png").mean(axis=2), np.uint8), 16)
    thumbs += list(np.round(patches).astype(np.uint8))
    ours = image_code_bits(np.stack(thumbs).astype(np.float64))
    for thumb, code in zip(thumbs, ours, strict=True):
        iscc = iscc_lib.gen_image_code_v0(thumb.tobytes())["iscc"]
        assert int.from_bytes(iscc_lib.iscc_decode(iscc)[4], "big") == int(code)


def test_uniform_border_and_transparency_are_prepared_as_the_spec_says(fingerprinter: Fingerprinter) -> None:
    rgb = photo("coffee.png")
    padded = np.pad(rgb, ((40, 10), (25, 60), (0, 0)), constant_values=255)
    assert fingerprinter.compute(padded).iscc == fingerprinter.compute(rgb).iscc
    # Fully transparent pixels are white, whatever colour they hold.
    alpha = np.full(padded.shape[:2], 255, np.uint8)
    alpha[:40] = 0
    garbage = padded.copy()
    garbage[:40] = (0, 200, 0)
    assert fingerprinter.compute(garbage, alpha).iscc == fingerprinter.compute(rgb).iscc
    flat = np.full((300, 300, 3), 90, np.uint8)  # one colour: nothing to trim, still a code
    assert fingerprinter.compute(flat).iscc.startswith("ISCC:")


def test_stored_and_query_fingerprints(fingerprinter: Fingerprinter) -> None:
    rgb = photo("astronaut.png")
    stored = fingerprinter.compute(rgb)
    assert stored.scheme == SCHEME
    assert stored.kinds == (KIND_ISCC,) + (KIND_KEYPOINT,) * 16 + (KIND_FINE,) * 32
    query = fingerprinter.query(rgb)
    assert query.kinds[:2] == ("iscc", "iscc-mirror") and len(query.entries) == 2 + 24 * 3  # upright, -10, +10
    # The upright query codes are the ones the first scheme computed: its stored codes stay findable.
    old_layout = Fingerprinter(fine_keypoints=0).compute(rgb)
    assert old_layout.scheme == SCHEME_V1 and old_layout.entries == stored.entries[:17]
    assert ImageFingerprints.from_packed(stored.iscc, stored.packed()) == stored
    # The mirrored code of a flipped copy is the original's code.
    flipped = fingerprinter.query(np.ascontiguousarray(rgb[:, ::-1]))
    assert flipped.entries[1].code == stored.entries[0].code
    # Tiny images still get their ISCC code (no patch fits).
    assert fingerprinter.compute(rgb[:20, :20]).kinds[0] == KIND_ISCC


# --- finding the original ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "edit",
    ["JPEG 50", "WebP 75", "resize 0.5", "brightness +20%", "contrast -20%", "flip horizontal", "rotate 5"],
)
def test_edited_copies_find_their_original(index: FingerprintIndex, fingerprinter: Fingerprinter, edit: str) -> None:
    for name in PHOTOS:
        candidates = index.search(fingerprinter.query(EDITS[edit](photo(name))))
        assert candidates and candidates[0].record_id == name, (name, candidates)
        assert len(candidates) <= 8 and all(c.distance <= MAX_DISTANCE for c in candidates)


@pytest.mark.parametrize(("area", "fx", "fy"), [(0.9, 1, 1), (0.75, 0, 0), (0.75, 1, 0.3), (0.5, 0.5, 0.5)])
def test_crops_find_their_original(
    index: FingerprintIndex, fingerprinter: Fingerprinter, area: float, fx: float, fy: float
) -> None:
    found = 0
    for name in PHOTOS:
        candidates = index.search(fingerprinter.query(crop(photo(name), area, fx, fy)))
        assert len(candidates) <= 8
        found += any(c.record_id == name for c in candidates)
        assert all(c.record_id == name for c in candidates), (name, candidates)  # no wrong candidate here
    # Measured: every photo at 90% and 75%; at 50% 93% over random offsets (fingerprint_bench --recall).
    assert found >= len(PHOTOS) - (1 if area <= 0.5 else 0)


@pytest.mark.parametrize("degrees", [10.0, -10.0])
def test_rotated_copies_propose_their_original(
    index: FingerprintIndex, fingerprinter: Fingerprinter, degrees: float
) -> None:
    """Turned 10 degrees: cropped to the inner rectangle, or whole with black corners (same or grown canvas)."""
    for name in PHOTOS:
        rgb = photo(name)
        for rotated in (
            rotate_inner(rgb, degrees),
            rotate_black(rgb, degrees, expand=False),
            rotate_black(rgb, degrees, expand=True),
        ):
            candidates = index.search(fingerprinter.query(rotated))
            assert candidates and candidates[0].record_id == name, (name, rotated.shape, candidates)


@pytest.mark.parametrize("area", [0.25, 0.1])
def test_tight_crops_propose_their_original(index: FingerprintIndex, fingerprinter: Fingerprinter, area: float) -> None:
    offsets = [(0.5, 0.5), (0.1, 0.8), (0.9, 0.2), (0.3, 0.3)]
    ranks = []
    for name in PHOTOS:
        for fx, fy in offsets:
            found = [c.record_id for c in index.search(fingerprinter.query(crop(photo(name), area, fx, fy)))]
            assert len(found) <= 8
            ranks.append(found.index(name) + 1 if name in found else 0)
    # Measured at these offsets: see the assertion message; fingerprint_bench --recall has more offsets.
    proposed = sum(r > 0 for r in ranks)
    assert proposed >= len(ranks) * (0.9 if area == 0.25 else 0.7), ranks
    assert sum(r == 1 for r in ranks) >= proposed - 1, ranks  # the original first when proposed


def _noise_like(seed: int, size: int = 512) -> np.ndarray:
    """A picture like a random-weight generator's: band-limited noise, many blobs of equal strength."""
    rng = np.random.default_rng(seed)
    x = cv2.GaussianBlur(rng.normal(size=(size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return np.clip((x - x.mean()) / x.std() * 40 + 128, 0, 255).astype(np.uint8)


def test_second_look_proposes_tight_crops_of_noise_like_pictures(fingerprinter: Fingerprinter) -> None:
    """The first query misses some 25-50% crops of noise-like pictures; its second look finds every one."""
    rng = np.random.default_rng(5)
    first = both = total = 0
    for seed in range(6):
        picture = _noise_like(seed)
        stored = fingerprinter.compute(picture).codes
        for area in (0.5, 0.25):
            side = int(picture.shape[0] * area**0.5)
            for _ in range(3):
                y, x = rng.integers(0, picture.shape[0] - side, 2)
                copy = np.ascontiguousarray(picture[y : y + side, x : x + side])
                near = [
                    int(np.bitwise_count(look.codes[:, None] ^ stored[None, :]).min()) <= MAX_DISTANCE
                    for look in (fingerprinter.query(copy), fingerprinter.second_look(copy))
                ]
                total += 1
                first += near[0]
                both += near[0] or near[1]
    assert both == total, (first, both, total)
    assert first < both  # what the second look is for (measured: 29 of 36 at the first look)


def test_the_second_look_can_be_turned_off(fingerprinter: Fingerprinter) -> None:
    no_second_look = Fingerprinter(second_look_work_sizes=())
    assert no_second_look.second_look(_noise_like(0)).entries == ()
    assert len(fingerprinter.second_look(_noise_like(0)).entries) > 0


def test_records_of_the_first_scheme_are_still_found(fingerprinter: Fingerprinter) -> None:
    """Rows stored before fine patches existed (``iscc64+kp16/1``) load, and rotated copies still find them."""

    class Rows:
        def fingerprints_since(self, cursor: int, limit: int) -> list[tuple[int, str, str, bytes]]:
            rows = []
            for i, name in enumerate(PHOTOS + DISTRACTORS, start=1):
                old = Fingerprinter(fine_keypoints=0).compute(photo(name))
                new = fingerprinter.compute(photo(name))
                rows.append((2 * i - 1, f"v1:{name}", old.scheme, old.packed()))
                rows.append((2 * i, f"v2:{name}", new.scheme, new.packed()))
            return [r for r in rows if r[0] > cursor][:limit]

    index = FingerprintIndex()
    assert index.sync(Rows()) == 2 * len(PHOTOS + DISTRACTORS)
    for name in PHOTOS:
        found = [c.record_id for c in index.search(fingerprinter.query(rotate_inner(photo(name), 10)))]
        assert found[:2] in ([f"v1:{name}", f"v2:{name}"], [f"v2:{name}", f"v1:{name}"]), (name, found)


def test_unrelated_images_get_no_confident_candidate(index: FingerprintIndex, fingerprinter: Fingerprinter) -> None:
    chance = 0
    for name in UNRELATED:
        rgb = photo(name)
        edits = [EDITS[edit](rgb) for edit in ("JPEG 50", "resize 0.5", "flip horizontal")]
        edits += [rotate_inner(rgb, 10), rotate_black(rgb, -10, expand=True), crop(rgb, 0.1, 0.5, 0.5)]
        for edited in edits:
            # Fine patches and rotated query patches bring chance candidates (a single code within 8 bits:
            # every candidate is confirmed later); a real copy matches several codes and ranks above them.
            candidates = index.search(fingerprinter.query(edited))
            chance += len(candidates)
            assert all(c.matches == 1 for c in candidates), (name, edited.shape, candidates)
    assert chance <= 6, chance  # measured: 5 single-code candidates in 42 lookups
    rng = np.random.default_rng(5)
    noise = [Fingerprint(KIND_KEYPOINT, int(c)) for c in rng.integers(0, 2**64, 2000, dtype=np.uint64)]
    assert index.search(noise) == []


# --- the index -----------------------------------------------------------------------------------
def test_index_search_is_exact_hashed_or_not() -> None:
    """Multi-index hash and the not-yet-hashed tail both return exactly what brute force does."""
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**64, size=(3000, 17), dtype=np.uint64)
    index = FingerprintIndex(delta_limit=10**9)
    for r, row in enumerate(codes):
        index.add(f"r{r}", ImageFingerprints("", tuple(Fingerprint(KIND_KEYPOINT, int(c)) for c in row)))
    queries = codes[rng.integers(0, len(codes), 40), rng.integers(0, 17, 40)]
    for i in range(len(queries)):
        for bit in rng.choice(64, size=int(rng.integers(0, 10)), replace=False):
            queries[i] ^= np.uint64(1) << np.uint64(bit)
    query = [Fingerprint(KIND_KEYPOINT, int(q)) for q in queries]
    distance = np.bitwise_count(codes[None, :, :] ^ queries[:, None, None])  # (query, record, entry)
    expected = {f"r{r}": int(distance[:, r].min()) for r in np.nonzero((distance <= 8).any(axis=(0, 2)))[0]}
    for rebuilt in (False, True):
        if rebuilt:
            index.rebuild()
            assert index._hash is not None and index._hash.size == index.entries
        found = index.search(query, k=len(codes), max_distance=8)
        assert {c.record_id: c.distance for c in found} == expected
        matches = [c.matches for c in found]
        assert matches == sorted(matches, reverse=True)


def test_index_is_thread_safe() -> None:
    rng = np.random.default_rng(4)
    index = FingerprintIndex(delta_limit=500)  # rebuilds on the background thread while searching
    rows = rng.integers(0, 2**64, size=(600, 17), dtype=np.uint64)
    errors: list[BaseException] = []

    def writer() -> None:
        for r, row in enumerate(rows):
            index.add(f"r{r}", ImageFingerprints("", tuple(Fingerprint(KIND_KEYPOINT, int(c)) for c in row)))

    def reader() -> None:
        try:
            for r in range(300):
                found = index.search([Fingerprint(KIND_KEYPOINT, int(rows[r, 3]))], k=1)
                assert not found or found[0].distance == 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    index.rebuild()
    assert not errors and len(index) == len(rows)
    for r in (0, 299, 599):
        assert index.search([Fingerprint(KIND_KEYPOINT, int(rows[r, 5]))], k=1)[0].record_id == f"r{r}"


# --- storage and sync ----------------------------------------------------------------------------
def _record() -> Record:
    rid = new_record_id()
    return Record(
        id=rid,
        sha256=rid * 2,
        cid="bafy",
        signature="sig",
        key_id="key",
        media_type="image/png",
        size_bytes=1,
        width=1,
        height=1,
        source_type="trainedAlgorithmicMedia",
        watermarked=False,
    )


def test_sync_picks_up_rows_from_other_instances(tmp_path: Path, fingerprinter: Fingerprinter) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engines = [make_engine(url), make_engine(url)]
    migrate(engines[0])
    here, there = (RecordRepository(session_factory(e)) for e in engines)
    index = FingerprintIndex()
    prints = {name: fingerprinter.compute(photo(name)) for name in PHOTOS[:3]}

    # Another instance certifies: the record and its fingerprints in one transaction.
    first = there.add(_record(), prints[PHOTOS[0]])
    assert index.sync(here) == 1 and len(index) == 1
    assert index.sync(here) == 0  # nothing new: nothing added twice
    # This instance certifies and indexes at once; sync later sees the row and skips it.
    mine = _record()
    here.add(mine)
    here.add_fingerprints(mine.id, prints[PHOTOS[1]])
    index.add(mine.id, prints[PHOTOS[1]])
    late = there.add(_record())
    there.add_fingerprints(late.id, prints[PHOTOS[2]])
    assert index.sync(here) == 1 and len(index) == 3
    stored = here.fingerprints(first.id)
    assert stored is not None and stored.iscc == prints[PHOTOS[0]].iscc and stored.scheme == SCHEME
    for name, record_id in ((PHOTOS[0], first.id), (PHOTOS[1], mine.id), (PHOTOS[2], late.id)):
        assert index.search(fingerprinter.query(photo(name)))[0].record_id == record_id
    for engine in engines:
        engine.dispose()


def test_sync_catches_a_row_committed_after_a_higher_one() -> None:
    """Row ids are taken at insert and seen at commit: a slow transaction can land below the cursor."""

    class Rows:
        def __init__(self) -> None:
            self.rows: list[tuple[int, str, str, bytes]] = []

        def fingerprints_since(self, cursor: int, limit: int) -> list[tuple[int, str, str, bytes]]:
            return sorted(r for r in self.rows if r[0] > cursor)[:limit]

    def row(row_id: int, code: int) -> tuple[int, str, str, bytes]:
        fingerprints = ImageFingerprints("", (Fingerprint(KIND_ISCC, code),))
        return (row_id, f"rec{row_id}", SCHEME, fingerprints.packed())

    rows = Rows()
    index = FingerprintIndex(lag=100)
    rows.rows = [row(1, 11), row(3, 33)]
    assert index.sync(rows, batch=1) == 2 and index.cursor == 3
    rows.rows.append(row(2, 22))  # committed late
    rows.rows.append(row(4, 44))
    rows.rows.append((5, "rec5", "another-scheme/9", b""))  # unknown layouts are skipped
    assert index.sync(rows) == 2 and len(index) == 4 and index.cursor == 5
    assert index.search([Fingerprint(KIND_ISCC, 22)])[0].record_id == "rec2"


def test_migration_0005_applies_and_reverts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    assert "record_fingerprints" in inspect(engine).get_table_names()
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert "record_fingerprints" not in inspect(engine).get_table_names()
    migrate(engine)
    assert "record_fingerprints" in inspect(engine).get_table_names()
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
    assert head is not None and head >= "0005"
    engine.dispose()
