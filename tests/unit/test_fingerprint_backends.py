"""Fingerprint back ends: the in-process index and Milvus (milvus-lite, a local file) rank alike and share."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.fingerprint import crop, rotate_inner
from provenance.config import Settings
from provenance.db.models import Record
from provenance.db.repository import RecordRepository, new_record_id
from provenance.db.session import make_engine, migrate, session_factory
from provenance.errors import ConfigurationError
from provenance.marks.fingerprint import (
    KIND_ISCC,
    SCHEME,
    Candidate,
    Fingerprint,
    Fingerprinter,
    FingerprintIndex,
    ImageFingerprints,
)
from provenance.marks.fingerprint_backend import FingerprintBackend
from provenance.marks.fingerprint_milvus import MilvusFingerprintIndex
from provenance.runtime.marks import open_fingerprint_index
from tests.conftest import PHOTOS, photo

DISTRACTORS = ["hubble_deep_field.jpg", "ihc.png", "camera.png", "horse.png", "coins.png", "moon.png"]
UNRELATED = ["retina.jpg", "brick.png", "grass.png"]
_names = itertools.count()


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One milvus-lite file for the module: it serves one process, and starting it takes seconds."""
    return tmp_path_factory.mktemp("milvus") / "fingerprints.db"


def _milvus(lite_file: Path, **options: int) -> MilvusFingerprintIndex:
    """An index over a fresh collection of the module's file."""
    return MilvusFingerprintIndex(str(lite_file), collection=f"fp_test_{next(_names)}", **options)


@pytest.fixture(scope="module")
def fingerprinter() -> Fingerprinter:
    return Fingerprinter(mirror_keypoints=True)  # as the service runs it


@pytest.fixture(scope="module")
def stored(fingerprinter: Fingerprinter) -> dict[str, ImageFingerprints]:
    return {name: fingerprinter.compute(photo(name)) for name in PHOTOS + DISTRACTORS}


@pytest.fixture(scope="module")
def both(
    lite_file: Path, stored: dict[str, ImageFingerprints]
) -> Iterator[tuple[FingerprintIndex, MilvusFingerprintIndex]]:
    memory, milvus = FingerprintIndex(), _milvus(lite_file)
    for name, fingerprints in stored.items():
        memory.add(name, fingerprints)
        milvus.add(name, fingerprints)
    yield memory, milvus
    milvus.close()


def _ties(found: list[Candidate]) -> list[set[Candidate]]:
    """The ranking as groups of equal (matches, distance): the back ends break those ties differently."""
    groups: list[set[Candidate]] = []
    for key, run in itertools.groupby(found, key=lambda c: (c.matches, c.distance)):
        del key
        groups.append(set(run))
    return groups


def test_both_back_ends_implement_the_interface(both: tuple[FingerprintIndex, MilvusFingerprintIndex]) -> None:
    memory, milvus = both
    for index in both:
        assert isinstance(index, FingerprintBackend)
    assert len(memory) == len(milvus) == len(PHOTOS) + len(DISTRACTORS)
    assert memory.entries == milvus.entries


def test_milvus_ranks_as_the_memory_index(
    both: tuple[FingerprintIndex, MilvusFingerprintIndex], fingerprinter: Fingerprinter
) -> None:
    """Same candidates, same counts, distances and kinds, same order, on edited photos and unrelated ones."""
    memory, milvus = both
    queries = {}
    for name in PHOTOS:
        rgb = photo(name)
        queries[f"{name} as is"] = rgb
        queries[f"{name} crop 50%"] = crop(rgb, 0.5, 1.0, 0.0)
        queries[f"{name} crop 25%"] = crop(rgb, 0.25, 0.3, 0.7)
        queries[f"{name} rotate 10"] = rotate_inner(rgb, 10.0)
        queries[f"{name} mirrored"] = np.ascontiguousarray(rgb[:, ::-1])
    for name in UNRELATED:
        queries[f"{name} (never indexed)"] = photo(name)
    proposed = 0
    for label, rgb in queries.items():
        query = fingerprinter.query(rgb)
        every = len(PHOTOS) + len(DISTRACTORS)
        in_memory, in_milvus = memory.search(query, k=every), milvus.search(query, k=every)
        assert _ties(in_milvus) == _ties(in_memory), label
        for radius in (4, 12):  # other radii than the default too (the engine's bound is exclusive)
            assert _ties(milvus.search(query, k=every, max_distance=radius)) == _ties(
                memory.search(query, k=every, max_distance=radius)
            ), (label, radius)
        top = milvus.search(query)
        assert len(top) <= 8 and top == in_milvus[:8]
        proposed += bool(top) and top[0].record_id == label.split(" ")[0]
    assert proposed >= 4 * len(PHOTOS)  # the copies are found: the comparison above is not of empty lists


def test_a_record_added_by_one_instance_is_found_by_another(
    lite_file: Path, stored: dict[str, ImageFingerprints]
) -> None:
    """Two index objects on one collection (milvus-lite serves one process: two clients of it here)."""
    writer = _milvus(lite_file)
    reader = MilvusFingerprintIndex(str(lite_file), collection=writer.collection)
    assert reader.search(stored[PHOTOS[0]]) == []
    writer.add("certified-here", stored[PHOTOS[0]])
    found = reader.search(stored[PHOTOS[0]])  # no sync, no wait: the search reads at Strong consistency
    assert found and found[0].record_id == "certified-here" and found[0].distance == 0
    writer.add("certified-here", stored[PHOTOS[0]])  # written twice: still one record
    assert len(reader) == 1 and reader.entries == len(stored[PHOTOS[0]].entries)
    writer.close()
    reader.close()


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


def test_sync_writes_the_rows_the_collection_lacks(
    tmp_path: Path, lite_file: Path, stored: dict[str, ImageFingerprints]
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    repository = RecordRepository(session_factory(engine))
    first = repository.add(_record(), stored[PHOTOS[0]])  # certified while no instance ran this back end
    index = _milvus(lite_file)
    assert index.sync(repository) == 1 and len(index) == 1
    assert index.sync(repository) == 0  # nothing new
    mine = repository.add(_record(), stored[PHOTOS[1]])
    index.add(mine.id, stored[PHOTOS[1]])  # certified here: in the collection already, sync skips it
    late = repository.add(_record(), stored[PHOTOS[2]])
    assert index.sync(repository) == 1 and len(index) == 3
    # Another instance starting later reads the shared cursor: nothing to write.
    other = MilvusFingerprintIndex(str(lite_file), collection=index.collection)
    assert other.sync(repository) == 0
    for name, record_id in ((PHOTOS[0], first.id), (PHOTOS[1], mine.id), (PHOTOS[2], late.id)):
        assert other.search(stored[name])[0].record_id == record_id
    index.close()
    other.close()
    engine.dispose()


def test_sync_catches_a_row_committed_below_the_shared_cursor(lite_file: Path) -> None:
    class Rows:
        def __init__(self) -> None:
            self.rows: list[tuple[int, str, str, bytes]] = []

        def fingerprints_since(self, cursor: int, limit: int) -> list[tuple[int, str, str, bytes]]:
            return sorted(r for r in self.rows if r[0] > cursor)[:limit]

    def row(row_id: int, code: int) -> tuple[int, str, str, bytes]:
        return (row_id, f"rec{row_id}", SCHEME, ImageFingerprints("", (Fingerprint(KIND_ISCC, code),)).packed())

    rows = Rows()
    index = _milvus(lite_file, lag=100)
    rows.rows = [row(1, 11), row(3, 33)]
    assert index.sync(rows, batch=1) == 2
    rows.rows += [row(2, 22), row(4, 44), (5, "rec5", "another-scheme/9", b"")]  # 2 committed late
    assert index.sync(rows) == 2 and len(index) == 4
    assert index.search([Fingerprint(KIND_ISCC, 22)])[0].record_id == "rec2"
    index.close()


def test_settings_choose_the_back_end(tmp_path: Path) -> None:
    assert isinstance(open_fingerprint_index(Settings(data_dir=tmp_path)), FingerprintIndex)
    lite = Settings(data_dir=tmp_path, fingerprint_backend="milvus", milvus_uri=str(tmp_path / "shared.db"))
    index = open_fingerprint_index(lite)
    assert isinstance(index, MilvusFingerprintIndex) and len(index) == 0
    index.close()
    with pytest.raises(ConfigurationError, match="PROVENANCE_FINGERPRINT_BACKEND must be"):
        Settings(fingerprint_backend="faiss")
    with pytest.raises(ConfigurationError, match="PROVENANCE_MILVUS_URI must be"):
        open_fingerprint_index(Settings(data_dir=tmp_path, fingerprint_backend="milvus", milvus_uri="ftp://x"))
