"""Perceptual fingerprints: find the certified original when the mark and the manifest are gone.

Two kinds of 64-bit codes, both computed with the ISCC image-code algorithm (``io.iscc.v0``: DCT of
32x32 gray pixels, the upper-left 8x8 coefficients compared with their median):

- ``iscc``: the ISCC image code of the whole image, prepared as the ISCC specification says (white
  behind transparency, uniform border trimmed, gray "L", 32x32 bicubic). It is the value of the
  C2PA soft-binding assertion (``ImageFingerprints.iscc``, e.g. ``ISCC:EEA...``). It survives
  re-encoding, resizing, brightness, contrast, noise and blur (distance 0-4 bits on photos), and a
  horizontal flip through the query's mirrored code, but not crops: a 2% shift of the frame already
  costs about 8 of the 64 bits, and a 75% crop gives a random-looking code.
- ``kp``: the same code over square patches centred on the strongest blobs of a difference-of-
  Gaussians scale space (the SIFT detector, kept to coarse scales on a 160-pixel working copy). The
  patch is ``PATCH_RADIUS`` times the blob's scale, so it moves and scales with the content: a crop
  or a resize finds the same blobs at the same places and the same patches, whatever the offset.
  Only patches wholly inside the image are used, which is also why a crop keeps most of them.

Certification stores the ``iscc`` code, ``keypoints`` (16) patch codes and ``fine_keypoints`` (32)
``kp-fine`` codes per record (scheme ``iscc64+kp16+kpf32/2``): the fine ones are the same code over
the small blobs of a 480-pixel working copy (its two finest octaves), at most 2 per cell of a 4x4
grid, so that a crop keeping 10% of the picture still holds some of them whole; the crop, brought to
the 160-pixel working size, shows them as ordinary blobs. A query uses the upload's ``iscc`` code, its
mirror (flip) and ``query_keypoints`` (24) patch codes sampled upright and turned by each of
``query_angles`` (+-10 degrees): an upright patch code survives about 6 degrees of rotation, the
turned ones carry that to about 16. Rows of the first scheme (``iscc64+kp16/1``: no fine codes) are
still loaded and found: their codes are exactly the new rows' first 17, computed the same way.
Candidates are records with a stored code within ``MAX_DISTANCE`` = 8 bits of a query code, ranked by
how many of their codes matched, then by the best distance. On the scikit-image photos (numbers in
``fingerprint_bench``'s docstring) the original is proposed after every edit of the issue's list,
crops of 50% of the area included (97% of random offsets), rotations of 10 degrees (inner crop, black
corners) always, crops of 25% / 10% of the area 95% / 80-89% of the time (first scheme: 75% / 22%,
rotation 10: 25-50%). Why this scheme: the whole-image code alone finds 34% of 90% crops and 1% of
75% crops; a grid of windows needs the window within ~1% of the crop's frame (8 bits lost per 2%
shift), about 200 windows per record for 50% crops.

Chance matches: patches of natural images share structure, so two unrelated patch codes come
within 8 bits far more often than random codes do (measured 7e-7 per pair of codes, against 7e-10
for random balanced codes; within 6 bits 2e-7). At a million records (49M codes, 98 query codes with
the mirrored patches) that is a few thousand single-code chance matches per lookup (random codes:
none); the ranking puts the several-code matches of a real original first, and every candidate is
confirmed afterwards. Small fine patches are plainer than large ones: among the 22 scikit-image
pictures an unrelated upload gets a single-code candidate in about 1 lookup of 10.

The codes are computed in ``provenance.marks.fingerprint_codes`` and searched in
``provenance.marks.fingerprint_index`` (multi-index hashing); this module is the stage's face and
keeps every name importable from where callers have always found it.
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
