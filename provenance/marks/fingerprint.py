"""Perceptual fingerprints: find the certified original when the mark and the manifest are gone.

The codes are computed in ``provenance.marks.fingerprint_codes`` and searched in
``provenance.marks.fingerprint_index`` (multi-index hashing); this module is the stage's face and
keeps every name importable from where callers have always found it. The design (the two kinds of code,
the stored and query schemes, what survives which edit, chance matches) is in docs/architecture.md,
section "Fingerprints".
"""

from __future__ import annotations

from typing import Any

from provenance.marks.fingerprint_codes import (  # noqa: F401
    ALG,
    CONTRAST,
    EDGE_RATIO,
    KIND_FINE,
    KIND_ISCC,
    KIND_KEYPOINT,
    KIND_MIRROR,
    KINDS,
    LEVELS,
    MAX_DISTANCE,
    PATCH_RADIUS,
    SCHEME,
    SCHEME_V1,
    SCHEMES,
    SIGMA0,
    WORK_SIZE,
    Fingerprint,
    Fingerprinter,
    ImageFingerprints,
    Keypoint,
    code_to_iscc,
    image_code_bits,
    iscc_image_code,
    iscc_thumbnail,
    keypoint_patches,
)
from provenance.marks.fingerprint_index import Candidate, FingerprintIndex, FingerprintRows  # noqa: F401


def backfill(repository: Any, store: Any, fingerprinter: Fingerprinter, *, batch: int = 500) -> int:
    """Fingerprint every record that has none yet, from its certified file; returns how many were added.

    Records certified before fingerprints existed cannot be found through the index until this runs
    (``provenance fingerprints backfill``). A record whose file cannot be read is skipped, and reported
    by the count staying below the number of records without fingerprints.
    """
    from provenance import media
    from provenance.errors import ProvenanceError

    added = 0
    skipped: set[str] = set()
    while True:
        pending = [r for r in repository.without_fingerprints(batch + len(skipped)) if r.id not in skipped]
        if not pending:
            return added
        for record in pending:
            try:
                _, rgb = media.decode_rgb(store.cat(record.cid), max_bytes=1 << 62, max_pixels=1 << 62)
            except ProvenanceError:
                skipped.add(record.id)
                continue
            repository.add_fingerprints(record.id, fingerprinter.compute(rgb))
            added += 1
