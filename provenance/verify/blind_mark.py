"""The blind reading of the keyed mark: which rescalings to try, and the record a payload proposes."""

from __future__ import annotations

import math
import time

import numpy as np

from provenance.db.repository import RecordRepository
from provenance.marks import watermark
from provenance.marks.watermark import Watermarker
from provenance.verify.checks import WatermarkCheck
from provenance.verify.evidence import Evidence


class BlindMarkReader:
    """Reads the keyed mark on an upload as given (and rescaled toward the sizes of marked records)."""

    def __init__(self, watermarker: Watermarker, repository: RecordRepository) -> None:
        self.watermarker = watermarker
        self.repository = repository
        # The sizes of marked records, for the blind read's rescalings (see blind_factors).
        self._marked_sizes: frozenset[tuple[int, int]] = frozenset()
        self._sizes_read_at = -math.inf

    def blind_factors(self, width: int, height: int, factors: tuple[float, ...]) -> tuple[float, ...]:
        """The rescalings worth a blind read: those that give back the size of some marked record.

        A rescaled read only helps a copy resized from a whole original, and only when scaling it back
        restores that original's size (to a pixel or two of rounding); every other rescaling reads noise,
        costs up to four times the image's own read, and adds a chance of a false decode. The set of marked
        sizes is read at most once a second, and only when a rescaling is not in it; sizes this instance
        marked itself count at once.
        """

        fresh = self.watermarker.marked_sizes  # sizes this instance marked since it started

        def sizes_near(factor: float) -> bool:
            w, h = round(width * factor), round(height * factor)
            near = [(w + dx, h + dy) for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)]
            return any(size in self._marked_sizes or size in fresh for size in near)

        kept = []
        for factor in factors:
            if factor != 1.0 and not sizes_near(factor) and time.monotonic() - self._sizes_read_at >= 1.0:
                self._marked_sizes = frozenset(self.repository.marked_sizes())
                self._sizes_read_at = time.monotonic()
            if factor == 1.0 or sizes_near(factor):
                kept.append(factor)
        return tuple(kept)

    def check(self, ev: Evidence, rgb: np.ndarray) -> WatermarkCheck:
        """Read the mark blind and propose the record it names (a candidate until the content is bound)."""
        factors = self.blind_factors(rgb.shape[1], rgb.shape[0], ev.blind_factors or self.watermarker.factors)
        ev.detection = detection = self.watermarker.detect(rgb, factors=factors)
        report = WatermarkCheck(
            detected=detection.detected,
            method=self.watermarker.method,
            watermark_id=detection.watermark_id,
            corrected_errors=detection.corrected_errors,
            bit_errors=detection.bit_errors,
            rescale=detection.scale,
            tries=detection.tries,
            false_positive_probability=detection.false_positive_probability,
            record_id=None,
        )
        if detection.reason:
            report.reason = detection.reason
        if detection.watermark_id is not None:
            found = self.repository.by_watermark(detection.watermark_id)
            # A reading counts for a record only in the layout its mark was embedded with.
            same_layout = (
                found is not None and (found.mark_layout or watermark.LAYOUT_VERSION) == detection.layout_version
            )
            if same_layout and ev.proposable(found):
                ev.mark_record = found
            # Named only once the content is bound to the record's original (see _check_binding).
            report.claimed_record_id = ev.mark_record.id if ev.mark_record else None
            if ev.mark_record is None:
                report.reason = "a payload was read but it names no record of this service"
        return report
