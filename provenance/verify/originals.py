"""The certified originals a verification compares an upload with: decoded pixels (cached), mark references, and
the binding of an upload to an original (same pixels, or the same content once aligned)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np

from provenance import media
from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.errors import ProvenanceError
from provenance.ipfs import ContentStore
from provenance.marks.align import Alignment, align, direct_alignment
from provenance.marks.binding import compare, pixels_identical
from provenance.marks.luma import LumaReference
from provenance.verify.evidence import Binding, Via

logger = logging.getLogger(__name__)

# Decoded originals kept per instance: 16 1024x1024 pictures (48 MB of uint8 values).
ORIGINAL_CACHE_VALUES = 16 * 1024 * 1024 * 3


class OriginalPictures:
    """Records' certified originals, read from the content store and decoded once.

    Decoded certified originals are kept by CID (immutable content): a copy that goes viral is verified
    again and again against the same original, and decoding a 1024x1024 PNG costs ~30 ms. Bounded by pixels.
    """

    def __init__(
        self, store: ContentStore, repository: RecordRepository, limits: media.StructureLimits | None = None
    ) -> None:
        self.store = store
        self.repository = repository
        self.limits = limits
        self._originals: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def luma_reference(self, record: Record) -> LumaReference | None:
        """The record's stored luminance mark reference (None: a mark made before it, or unreadable)."""
        data = self.repository.mark_reference(record.id)
        if data is None:
            return None
        try:
            return LumaReference.from_bytes(data)
        except ValueError:
            logger.warning("record %s: its luminance mark reference cannot be read", record.id)
            return None

    def rgb(self, record: Record) -> np.ndarray | None:
        """The record's certified pixels (read-only: shared by every verification that needs them)."""
        with self._lock:
            if record.cid in self._originals:
                self._originals.move_to_end(record.cid)
                return self._originals[record.cid]
        try:
            _, rgb = media.decode_rgb(
                self.store.cat(record.cid), max_bytes=1 << 62, max_pixels=1 << 62, limits=self.limits
            )
        except ProvenanceError:
            return None
        rgb.setflags(write=False)
        with self._lock:
            self._originals[record.cid] = rgb
            while sum(image.size for image in self._originals.values()) > ORIGINAL_CACHE_VALUES:
                self._originals.popitem(last=False)
        return rgb

    def bind(self, record: Record, via: Via, rgb: np.ndarray, *, alignment: Alignment | None = None) -> Binding | None:
        """Tie the upload to ``record``'s certified original: same pixels, or the same content once aligned.

        Without an ``alignment`` the geometry a blind mark reading implies is tried first (the whole
        original, resized), then a feature alignment (a composite, a crop that kept the block grid).
        """
        original = self.rgb(record)
        if original is None:
            return None
        if pixels_identical(rgb, original):
            return Binding(record, via, original, pixels_identical=True)
        tries = [alignment] if alignment is not None else [direct_alignment(rgb, original), None]
        best: Binding | None = None
        for attempt in tries:
            fitted = attempt if attempt is not None else align(rgb, original)
            if fitted is None:
                continue
            binding = Binding(record, via, original, alignment=fitted, comparison=compare(fitted, rgb, original))
            if binding.holds:
                return binding
            best = best or binding
        return best or Binding(record, via, original)
