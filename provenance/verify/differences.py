"""What a modified copy changed: the kind of modification, the changes in words, the regions, and the image.

``describe_modification`` reads a binding (the upload aligned to its certified original) into a
``ModificationDetail``; ``DifferenceImages`` renders the difference PNG after the answer and keeps the
recent ones for ``GET /v1/verify/{id}/diff.png``.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from provenance.db.models import Record
from provenance.marks.align import describe_changes, difference_png
from provenance.verify.evidence import Binding
from provenance.verify.report import ModificationDetail, Region

logger = logging.getLogger(__name__)

DIFF_CACHE_SIZE = 256  # difference images kept for GET /v1/verify/{id}/diff.png
# Difference images are rendered after the answer, on one background thread (a 1024x1024 PNG costs ~50 ms, which no
# verdict needs). When this many are waiting, the next one is rendered inline: memory stays bounded under load.
MAX_PENDING_DIFFS = 4


def describe_modification(
    binding: Binding | None, rgb: np.ndarray, mime_type: str, record: Record
) -> tuple[ModificationDetail, Callable[[], bytes] | None]:
    """For a modified copy: the kind of modification, what changed and where (and how to draw the differences).

    ``binding`` is the upload tied to ``record``'s certified original (None when the original cannot be read).
    """
    out = ModificationDetail()
    if binding is None:
        return out, None
    if binding.pixels_identical:
        out.modification = "container"
        out.changes = ["same pixels as the certified original; the file around them changed"]
        return out, None
    alignment, comparison = binding.alignment, binding.comparison
    if alignment is None or comparison is None:
        out.changes = ["could not be aligned with the certified original"]
        return out, None
    # Media types are image/<format>, with the format names describe_changes expects.
    upload_fmt, original_fmt = mime_type.removeprefix("image/"), record.media_type.removeprefix("image/")
    size = (rgb.shape[1], rgb.shape[0])
    changes = describe_changes(alignment, upload_fmt, original_fmt, size, (record.width, record.height))
    # The cell comparison is the edit detector: drop the pixel-level estimate it replaces.
    changes = [c for c in changes if not c.startswith("edited:")]
    out.modification = comparison.kind  # type: ignore[assignment]
    if comparison.contained_region is not None:
        box = comparison.contained_region
        # The geometry and light fitted over the whole frame describe the host picture, not the pasted region.
        changes = [c for c in changes if not c.startswith(("cropped", "covers", "brightness", "contrast", "satur"))]
        changes.insert(
            0,
            f"contains a region of record {record.id} at ({box.x0},{box.y0})-({box.x1},{box.y1}), "
            f"{box.share:.0%} of the image",
        )
        out.contained_region = Region(box=box.box, share=box.share)
    for region in comparison.edited_regions:
        changes.append(
            f"edited region at ({region.x0},{region.y0})-({region.x1},{region.y1}), {region.share:.1%} of the image"
        )
    out.edited_regions = [Region(box=r.box, share=r.share) for r in comparison.edited_regions]
    out.changes = changes
    return out, functools.partial(difference_png, alignment, binding.original_rgb)


class DifferenceImages:
    """Difference images of recent verifications, by verification id: bounded, in memory, never pinned.

    A public endpoint must not let anyone fill the blockstore. Each image is rendered on one background
    thread after the answer, or inline when ``MAX_PENDING_DIFFS`` are already waiting.
    """

    def __init__(self) -> None:
        self._diffs: OrderedDict[str, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="difference-png")

    def get(self, verification_id: str) -> bytes | None:
        """The PNG of a recent verification's differences, if still held (waits for its rendering)."""
        with self._lock:
            pending = self._diffs.get(verification_id)
        if pending is None:
            return None
        try:
            return pending.result(timeout=60)
        except Exception:  # cancelled (evicted), or the rendering failed: as if it had expired
            logger.warning("difference image %s could not be rendered", verification_id, exc_info=True)
            return None

    def keep(self, render: Callable[[], bytes]) -> str:
        """Render (now or soon) and keep a difference image; returns its verification id."""
        verification_id = secrets.token_hex(16)
        with self._lock:
            waiting = sum(not future.done() for future in self._diffs.values())
        if waiting >= MAX_PENDING_DIFFS:
            pending: Future[bytes] = Future()
            pending.set_result(render())
        else:
            pending = self._renderer.submit(render)
        with self._lock:
            self._diffs[verification_id] = pending
            while len(self._diffs) > DIFF_CACHE_SIZE:
                self._diffs.popitem(last=False)[1].cancel()
        return verification_id

    def close(self) -> None:
        """Stop the renderer (pending renderings are dropped)."""
        self._renderer.shutdown(wait=False, cancel_futures=True)
