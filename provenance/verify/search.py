"""The fingerprint path of verification: candidates proposed by the fingerprint, confirmed by the keyed mark.

Used when nothing else bound the upload (crops, flips, rotations, heavy edits). The fingerprint only proposes
records; a candidate is named only when the upload carries its certified pixels exactly, or when, aligned to
the candidate's original, the keyed mark confirms it within the false-match budget of the ``VerdictPolicy``
and the content is bound to the original.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.marks import watermark
from provenance.marks.align import Alignment, align, features
from provenance.marks.binding import ContentComparison, compare, pixels_identical
from provenance.marks.confirm import MarkConfirmation, confirm_mark
from provenance.marks.fingerprint import Fingerprinter
from provenance.marks.fingerprint_backend import FingerprintBackend
from provenance.marks.watermark import Watermarker
from provenance.verify.checks import FingerprintCandidate, FingerprintCheck, WeakMatch
from provenance.verify.evidence import Binding, Evidence
from provenance.verify.originals import OriginalPictures
from provenance.verify.policy import VerdictPolicy

Picture = tuple[str, int, int]  # what records holding the same image share: ISCC code (or record id), width, height


@dataclass
class _Search:
    """One fingerprint search's shared work: the upload described once, and per picture its alignment."""

    rgb: np.ndarray
    upload_features: Any
    threshold: float
    # Several records can hold the same picture (certified twice, or a batch of near-identical renders): their
    # originals share the whole-image code and the geometry, so one alignment serves them all; only the
    # mark, which differs per record, is read again.
    aligned: dict[Picture, Alignment | None] = field(default_factory=dict)
    compared: dict[Picture, ContentComparison] = field(default_factory=dict)
    originals: dict[Picture, np.ndarray | None] = field(default_factory=dict)


class FingerprintSearch:
    """Proposes records by fingerprint and confirms them by the keyed mark (see the module docstring)."""

    def __init__(
        self,
        *,
        fingerprinter: Fingerprinter,
        index: FingerprintBackend,
        repository: RecordRepository,
        originals: OriginalPictures,
        policy: VerdictPolicy,
        watermarker: Watermarker | None = None,
        max_candidates: int = 8,
    ) -> None:
        self.fingerprinter = fingerprinter
        self.fingerprint_index = index
        self.repository = repository
        self.originals = originals
        self.policy = policy
        self.watermarker = watermarker
        self.max_candidates = max_candidates
        self._synced_at = 0.0
        self._sync_lock = threading.Lock()

    def _sync_index(self) -> None:
        """Catch up with fingerprints other instances stored, at most once a second."""
        assert self.fingerprint_index is not None
        now = time.monotonic()
        if now - self._synced_at < 1.0 or not self._sync_lock.acquire(blocking=False):
            return
        try:
            self.fingerprint_index.sync(self.repository)
            self._synced_at = now
        finally:
            self._sync_lock.release()

    def _candidate_pictures(self, found: list[Any], ev: Evidence) -> list[tuple[Any, Record, Picture]]:
        """The candidates of the ``max_candidates`` best distinct pictures, every record holding one of them.

        A picture is what records holding the same image share (certified twice, near-identical renders): the
        ISCC code and the size. Records of one picture share one alignment, so trying all of them costs one mark
        reading each; a cap on records instead would let a picture certified many times crowd its own right
        record out of the list. Returns (candidate, record, picture), best first; one database query.
        """
        held = self.repository.pictures([candidate.record_id for candidate in found])
        pictures: set[Picture] = set()
        chosen = []
        for candidate in found:
            record, iscc = held.get(candidate.record_id, (None, None))
            if record is None or not ev.proposable(record):
                continue
            picture = (iscc or record.id, record.width, record.height)
            if picture not in pictures:
                if len(pictures) >= self.max_candidates:
                    continue
                pictures.add(picture)
            chosen.append((candidate, record, picture))
        return chosen

    def check(self, ev: Evidence, rgb: np.ndarray) -> FingerprintCheck:
        """Find the original when nothing else bound the upload (crops, flips, rotations, heavy edits).

        The fingerprint only proposes candidates. A candidate whose certified pixels the upload carries
        exactly is bound at once; otherwise the upload is aligned to the candidate's original, the keyed
        mark is read in the original's block grid, and the content is compared. A candidate that fails
        is reported as a weak match and never named as the record.
        """
        if ev.record is not None or ev.claimed_by_untrusted_manifest is not None:
            return FingerprintCheck(searched=False, reason="the record was already found by stronger evidence")
        self._sync_index()
        query = self.fingerprinter.query(rgb)
        found = self.fingerprint_index.search(query, k=self.policy.max_candidate_records)
        candidates = self._candidate_pictures(found, ev)
        if not candidates and self.fingerprinter.second_look_work_sizes:
            # Nothing proposed: look again at finer scales (tight crops of noise-like pictures). Only when the
            # first look tried no candidate, so the candidates tried are still those of one search and the
            # threshold below splits the budget among exactly them.
            found = self.fingerprint_index.search(
                self.fingerprinter.second_look(rgb), k=self.policy.max_candidate_records
            )
            candidates = self._candidate_pictures(found, ev)
        report = FingerprintCheck(searched=True, iscc=query.iscc, candidates=[], weak_matches=[])
        # Every candidate tried is a chance for a false confirmation: split the per-image budget among them.
        report.confirmation_threshold = threshold = self.policy.confirmation_threshold(len(candidates))
        # The upload is described once, and compared with each candidate.
        search = _Search(rgb, features(rgb) if candidates else None, threshold)
        for candidate, record, picture in candidates:
            if ev.copied_mark is not None and record.id == ev.copied_mark.id:
                continue
            row = self._try_candidate(ev, search, candidate.distance, record, picture)
            if row.record_id is not None:  # bound: the record is named
                report.candidates.append(row)
                break
            # Unconfirmed: similar, maybe a relative (another shot of the scene), maybe the original with its
            # mark destroyed. Reported, never named as the record.
            report.weak_matches.append(WeakMatch.model_validate({"record_id": record.id, **row.model_dump()}))
        bound = ev.bound
        report.record_id = bound.record.id if bound is not None and bound.via == "fingerprint" else None
        return report

    def _try_candidate(
        self, ev: Evidence, search: _Search, distance: int, record: Record, picture: Picture
    ) -> FingerprintCandidate:
        """One fingerprint candidate: same pixels, or aligned, compared and confirmed by the keyed mark.

        Binds the evidence when the candidate holds; the row has ``record_id`` set exactly then.
        """
        rgb = search.rgb
        row = FingerprintCandidate(distance=distance, aligned=False, confirmed=False)
        same_size = rgb.shape[:2] == (record.height, record.width)
        # Records of one picture differ only in their marks: one decoded original serves the alignment, the
        # comparison and the light fit of them all. Only an exact pixel check needs the record's own pixels.
        if same_size or picture not in search.originals:
            own = self.originals.rgb(record)
            search.originals.setdefault(picture, own)
            if same_size and own is not None and pixels_identical(rgb, own):
                ev.binding = Binding(record, "fingerprint", own, pixels_identical=True)
                ev.fingerprint_distance = distance
                row.record_id, row.pixels_identical = record.id, True
                return row
        original = search.originals[picture]
        if original is None:
            alignment = None
        elif picture in search.aligned:
            alignment = search.aligned[picture]
        else:
            alignment = search.aligned[picture] = align(rgb, original, upload_features=search.upload_features)
        if alignment is None or original is None:
            return row
        row.aligned = True
        if picture not in search.compared:  # the comparison depends on the picture only, like the alignment
            search.compared[picture] = compare(alignment, rgb, original)
        comparison = search.compared[picture]
        if record.watermark_id is None or self.watermarker is None:
            return row
        confirmation = self._confirm(record, alignment, comparison, original, search.threshold)
        row.confirmed, row.component, row.p_value = confirmation.confirmed, confirmation.component, confirmation.p_value
        row.agreeing_bits, row.bits_compared = confirmation.agreeing_bits, confirmation.bits_compared
        if confirmation.confirmed:
            binding = Binding(record, "fingerprint", original, alignment=alignment, comparison=comparison)
            binding.report_into(row)
            if binding.holds:
                ev.binding, ev.confirmation = binding, confirmation
                ev.fingerprint_distance = distance
                row.record_id = record.id
                return row
            ev.copied_mark = ev.copied_mark or record
        return row

    def _confirm(
        self,
        record: Record,
        alignment: Alignment,
        comparison: ContentComparison,
        original: np.ndarray,
        threshold: float,
    ) -> MarkConfirmation:
        """Read ``record``'s keyed mark on the aligned upload, in the original's block grid."""
        assert self.watermarker is not None and record.watermark_id is not None
        # Read the mark only where the upload shows the original (a composite's pasted region): the rest votes
        # noise. The area is chosen from luminance detail, never from the mark.
        shown = comparison.shown_mask(alignment.mask)
        return confirm_mark(
            alignment.aligned,
            shown,
            original,
            watermark.encode_payload(record.watermark_id, self.watermarker.key),  # mask: layout-free
            key=self.watermarker.key.for_layout(record.mark_layout),
            threshold=threshold,
            photometric=alignment.photometric if shown is alignment.mask else None,
            luma_reference=self.originals.luma_reference(record),
        )
