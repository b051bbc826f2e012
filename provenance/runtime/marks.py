"""Marks builders: the watermarker (its key read before any process starts) and the fingerprint index."""

from __future__ import annotations

from dataclasses import dataclass

from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.marks.fingerprint import Fingerprinter, FingerprintIndex
from provenance.marks.fingerprint_backend import FingerprintBackend
from provenance.marks.watermark import Watermarker


def read_watermarker(settings: Settings) -> Watermarker:
    """The mark key, read even with watermarking disabled: verify still reads marks made earlier.

    A local file: a bad one fails the start before any process is started.
    """
    key_file = settings.watermark_key_file or settings.resolved_data_dir / "keys" / "watermark.key"
    watermarker = Watermarker.from_key_file(key_file)
    watermarker.luma = settings.mark_luma
    return watermarker


@dataclass(frozen=True)
class Fingerprints:
    """The fingerprinter and the index of every record's fingerprints (both None when disabled)."""

    fingerprinter: Fingerprinter | None
    index: FingerprintBackend | None


def open_fingerprints(settings: Settings, repository: RecordRepository) -> Fingerprints:
    """Fingerprinting as the settings ask, the index loaded with every record's fingerprints."""
    if not settings.fingerprint_enabled:
        return Fingerprints(None, None)
    # Mirrored patch codes too: a crop that was also flipped is found (the mark confirms every candidate).
    fingerprinter = Fingerprinter(mirror_keypoints=True)
    index = open_fingerprint_index(settings)
    # Memory: every record's fingerprints; Milvus: the rows the shared collection lacks. Later ones are
    # caught up per lookup.
    index.sync(repository)
    return Fingerprints(fingerprinter, index)


def open_fingerprint_index(settings: Settings) -> FingerprintBackend:
    """The back end PROVENANCE_FINGERPRINT_BACKEND names, empty until synced (``FingerprintBackend``)."""
    if settings.fingerprint_backend == "milvus":
        from provenance.marks.fingerprint_milvus import MilvusFingerprintIndex  # pymilvus: the milvus extra

        uri = settings.milvus_uri or str(settings.resolved_data_dir / "fingerprints.milvus.db")
        return MilvusFingerprintIndex(uri)
    return FingerprintIndex()


@dataclass(frozen=True)
class Marks:
    """The mark and fingerprint components certify and verify share."""

    watermarker: Watermarker
    fingerprints: Fingerprints
