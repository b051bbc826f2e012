"""Content binding: does an upload show the picture a record certified, and what was done to it?

A mark, a manifest or a fingerprint can be copied from one file into another by anyone who can read
it (a mark's block phases or its residual can be lifted with free tools). What no copy can fake is
the picture itself: the service holds every certified original, so once the upload is aligned to a
candidate original (``provenance.marks.align``), the two can be compared where they overlap. Evidence
names a record only when that comparison says the upload shows the record's picture; otherwise the
mark was found on other content (a copied mark) and the record is reported as claimed, never named.

The comparison works on 8x8-pixel cell means in the original's frame, with the original put in the
upload's light (the brightness, contrast and saturation fitted by ``align.fit_photometric``): means
are what a re-encode, a resize, a blur or a denoise keep, and what a local edit changes.

- ``correlation``: the Pearson correlation of the band-pass luminance detail (``band_pass``) over the
  overlap. Re-encoded (JPEG 15 included), resized (to a quarter), denoised, blurred and colour-adjusted
  copies measured 0.89-1.00; unrelated photographs -0.03-0.03.
- ``changed`` cells: those whose mean colour differs from the original by more than the noise of
  the copy (``NOISE_SIGMAS`` robust standard deviations over the median, at least
  ``MIN_CELL_DIFFERENCE`` levels). Connected groups of at least ``MIN_REGION_CELLS`` are the edited
  regions, reported with their box in the upload's pixels.
- The upload shows the record's content when ``correlation >= MIN_CORRELATION`` and at least
  ``MIN_UNCHANGED_SHARE`` of the overlap is unchanged.
- A composite: the original covers only part of the upload and the rest carries content of its own
  (not a constant fill such as black rotation corners or a letterbox): at least
  ``COMPOSITE_SHARE`` of the upload lies outside the original's footprint.

Thresholds were calibrated on scikit-image photographs and generated images: JPEG 30-90, WebP,
resizes 0.25-2x, blur, non-local-means denoise, noise, gamma, hue and saturation changes never
produced an edited region; a 60x60 flat fill, a pasted 64x64 logo and an erased (inpainted) object
always did (``tests/unit/test_binding.py`` holds the cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from provenance.marks.align import Alignment

CELL = 8  # pixels a side of the cells compared (the mark's block size: its own noise averages out)
MIN_CORRELATION = 0.5  # band-pass detail: copies measured 0.89-1.00, unrelated photographs -0.03-0.03
MIN_UNCHANGED_SHARE = 0.5
# Share of 32x32 detailed blocks whose detail correlates (>= MIN_BLOCK_CORRELATION): copies measured 0.68 (strong
# denoise) to 1.00, unrelated photographs (upside-down views of the same photograph included) at most 0.31.
MIN_BLOCK_AGREEMENT = 0.5
MIN_TEXTURED_BLOCKS = 8
NOISE_SIGMAS = 6.0
MIN_CELL_DIFFERENCE = 14.0  # levels of 255: JPEG 30 moves a cell mean by 2-4, a blur by 1-3 on edges
MIN_REGION_CELLS = 8  # 8 cells of 8x8: smaller differing specks are noise (a 60x60 edit covers ~49)
COMPOSITE_SHARE = 0.2
HOST_CONTENT_SHARE = 0.1  # outside the original, this much content makes the rest host too (not a letterbox)
SHOWN_SHARE = 0.8  # an upload showing this much of what it covers of the original is not searched for a paste
FLAT_STD = 2.0  # a cell this uniform outside the original's footprint is fill, not content
CHROMA_WEIGHT = 0.6  # colour differences count a little less: global colour edits are harder to model
TONE_BANDS = 24  # luminance bands of the tone curve fit
MATCH_BLOCK = 32  # pixels a side of the blocks that look for a pasted region of the original
MIN_BLOCK_CORRELATION = 0.7
MIN_COMPOSITE_BLOCKS = 12  # a pasted region of at least ~12 blocks of 32x32 (about 110x110 pixels)
MIN_ADDED_SHARE = 0.01  # content added around the picture (a caption bar) is an edited region from 1% of the upload


@dataclass(frozen=True)
class Box:
    """A rectangle of the upload, (x0, y0, x1, y1) end exclusive, and its share of the upload's area."""

    x0: int
    y0: int
    x1: int
    y1: int
    share: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end exclusive."""
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class ContentComparison:
    """How the aligned upload compares with the original over the area they share."""

    correlation: float
    unchanged_share: float
    cells_compared: int
    threshold: float  # the per-cell colour difference above which a cell counts as changed
    block_agreement: float | None = None  # share of detailed blocks whose detail correlates; None: too few
    edited_regions: list[Box] = field(default_factory=list)
    contained_region: Box | None = None  # set for a composite: the original's footprint in the upload
    outside_share: float = 0.0  # share of the upload outside the footprint that carries content
    # A composite: the original-frame box wholly inside the part the upload shows (where to read the mark).
    shown: tuple[int, int, int, int] | None = None

    def shown_mask(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` (original frame) limited to what the upload shows of the original: where to read the mark."""
        if self.shown is None:
            return mask
        x0, y0, x1, y1 = self.shown
        limited = np.zeros_like(mask)
        limited[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
        return limited

    @property
    def matches(self) -> bool:
        """Whether the upload shows the original's picture (possibly edited in places)."""
        return (
            self.cells_compared > 0
            and self.correlation >= MIN_CORRELATION
            and (self.block_agreement is None or self.block_agreement >= MIN_BLOCK_AGREEMENT)
            and self.unchanged_share >= MIN_UNCHANGED_SHARE
        )

    @property
    def kind(self) -> str:
        """``composite``, ``edited`` or ``transformed`` (for a matching upload)."""
        if self.contained_region is not None:
            return "composite"
        return "edited" if self.edited_regions else "transformed"

    def as_dict(self) -> dict[str, object]:
        """The comparison as the verifier's evidence fields."""
        return {
            "content_matches": self.matches,
            "correlation": round(self.correlation, 4),
            "block_agreement": None if self.block_agreement is None else round(self.block_agreement, 4),
            "unchanged_share": round(self.unchanged_share, 4),
            "cells_compared": self.cells_compared,
            "cell_threshold": round(self.threshold, 2),
            "edited_regions": [{"box": list(r.box), "share": round(r.share, 4)} for r in self.edited_regions],
            "contained_region": None
            if self.contained_region is None
            else {"box": list(self.contained_region.box), "share": round(self.contained_region.share, 4)},
        }


def _cells(image: np.ndarray, rows: int, cols: int, side: int = CELL) -> np.ndarray:
    """Means over ``side`` x ``side`` cells (float32), the ragged edge dropped."""
    cut = np.ascontiguousarray(image[: rows * side, : cols * side], dtype=np.float32)
    # An area resize by a whole factor is the exact mean of each cell, and much faster than reshape-and-mean.
    return cv2.resize(cut, (cols, rows), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True, eq=False)
class _Shared:
    """What every comparison of one aligned upload with one original shares: computed once per ``compare``.

    The band-pass detail of both, its per-block statistics (``MATCH_BLOCK`` blocks: normalised correlation,
    and which blocks have detail on either side, on both), and the cell colours of both.
    """

    detail: tuple[np.ndarray, np.ndarray]
    ncc: np.ndarray
    textured: np.ndarray
    both: np.ndarray
    cells: tuple[np.ndarray, np.ndarray]

    @classmethod
    def of(cls, aligned: np.ndarray, original_rgb: np.ndarray) -> _Shared:
        detail = (band_pass(aligned), band_pass(original_rgb))
        side = MATCH_BLOCK
        out_h, out_w = original_rgb.shape[:2]
        rows, cols = out_h // side, out_w // side
        if rows and cols:
            # Centred sums from block means of the detail and its products (area resizes, float32 as the detail),
            # centred in float64. The detail is zero-mean within a few levels, so the centring cancels little.
            a, o = detail

            def means(plane: np.ndarray) -> np.ndarray:
                return _cells(plane, rows, cols, side).astype(np.float64)

            mean_a, mean_o = means(a), means(o)
            n = float(side * side)
            energy_a = np.sqrt(np.maximum(n * (means(a * a) - mean_a * mean_a), 0.0))
            energy_o = np.sqrt(np.maximum(n * (means(o * o) - mean_o * mean_o), 0.0))
            ncc = n * (means(a * o) - mean_a * mean_o) / np.maximum(energy_a * energy_o, 1e-6)
        else:
            energy_a = energy_o = ncc = np.zeros((rows, cols))
        floor = side * FLAT_STD  # detail std of at least FLAT_STD
        rows, cols = out_h // CELL, out_w // CELL
        if rows and cols:
            cells = (_yuv_cells(aligned, rows, cols), _yuv_cells(original_rgb, rows, cols))
        else:
            cells = (np.zeros((rows, cols, 3)), np.zeros((rows, cols, 3)))
        return cls(
            detail=detail,
            ncc=ncc,
            textured=(energy_o >= floor) | (energy_a >= floor),
            both=(energy_o >= floor) & (energy_a >= floor),
            cells=cells,
        )


def _yuv_cells(rgb: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Cell means of luminance and the two colour differences (float64, rows x cols x 3)."""
    cells = _cells(rgb, rows, cols).astype(np.float64)
    luma = cells @ np.array([0.299, 0.587, 0.114])
    return np.stack([luma, (cells[..., 2] - luma) * 0.492, (cells[..., 0] - luma) * 0.877], axis=-1)


def _robust_fit(design: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least squares, refitted without the worst residuals (edited cells must not bend the fit).

    Solved through the normal equations of the column-scaled design (a 9x9 system, where ``lstsq`` on the
    whole design spent a few ms per fit): the design's columns are bounded polynomials of the cell colours,
    so the scaled system is well conditioned, and a column that is nearly a combination of others (an
    original in black and white has no colour terms) is dropped by the pseudo-inverse, as ``lstsq`` drops it.
    Only the fitted values on the design's rows are used, and those are the same whichever of equivalent
    coefficient vectors a rank-deficient fit returns.
    """
    count, terms = design.shape
    flat = target.reshape(count, -1)
    norms = np.sqrt(np.einsum("ij,ij->j", design, design))
    scale = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    scaled = design * scale
    keep = np.ones(count, bool)
    coef = np.zeros((terms, *target.shape[1:]))
    for _ in range(3):
        if keep.sum() < terms * 4:
            break
        rows = scaled if keep.all() else scaled[keep]
        normal = rows.T @ rows
        right = rows.T @ flat[keep]
        solved = np.linalg.lstsq(normal, right, rcond=1e-12)[0] * scale[:, None]
        coef = solved.reshape(terms, *target.shape[1:])
        residual = np.abs(flat - design @ solved).max(axis=1)
        keep = residual <= max(3.0 * float(np.median(residual)), 1.0)
    return coef


def _tone_curve(original: np.ndarray, upload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A monotone tone curve from original to upload luminance: the median per level band, interpolated.

    Any global curve (brightness, contrast, gamma, curves, clipping) is a monotone map of luminance; the
    median of each band ignores the few cells an edit changed.
    """
    edges = np.linspace(0.0, 255.0, TONE_BANDS + 1)
    centres, levels = [], []
    band = np.clip(np.digitize(original, edges) - 1, 0, TONE_BANDS - 1)
    for index in range(TONE_BANDS):
        inside = band == index
        if inside.sum() >= 3:
            centres.append(float(np.median(original[inside])))
            levels.append(float(np.median(upload[inside])))
    if not centres:
        return np.array([0.0, 255.0]), np.array([0.0, 255.0])
    return np.array(centres), np.maximum.accumulate(np.array(levels))


def _predicted(original: np.ndarray, upload: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The original's cells as the upload's tone and colour edits would show them.

    Luminance through a monotone tone curve (``_tone_curve``), colour through a quadratic map of the two
    colour differences (saturation, a hue shift, a colour cast, black and white), fitted robustly on the
    covered cells. Nothing local survives such a global fit, so an edited region stands out against it.
    """
    centres, levels = _tone_curve(original[..., 0][covered], upload[..., 0][covered])
    predicted = np.empty_like(original)
    predicted[..., 0] = np.interp(original[..., 0], centres, levels)

    def colour_terms(cells: np.ndarray) -> np.ndarray:
        u, v, y = cells[..., 1] / 64.0, cells[..., 2] / 64.0, cells[..., 0] / 255.0
        return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v, y * u, y * v, y], axis=-1)

    terms = colour_terms(original)
    colour_coef = _robust_fit(terms[covered], upload[..., 1:][covered])
    predicted[..., 1:] = terms @ colour_coef
    # An editor clips to 0-255 per channel after its curves: so must the prediction (a brightened sky that
    # saturated white is what the model predicts, not an edit).
    luma, u, v = predicted[..., 0], predicted[..., 1] / 0.492, predicted[..., 2] / 0.877
    red, blue = np.clip(luma + v, 0, 255), np.clip(luma + u, 0, 255)
    green = np.clip((luma - 0.299 * (luma + v) - 0.114 * (luma + u)) / 0.587, 0, 255)
    luma = 0.299 * red + 0.587 * green + 0.114 * blue
    return np.stack([luma, (blue - luma) * 0.492, (red - luma) * 0.877], axis=-1)


def _to_upload_box(alignment: Alignment, box: tuple[float, float, float, float], size: tuple[int, int]) -> Box:
    """An original-frame pixel box mapped into the upload (its bounding box there), clipped to the upload."""
    width, height = size
    x0, y0, x1, y1 = box
    to_upload = cv2.invertAffineTransform(alignment.matrix)
    corners = np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x0 - 0.5, y1 - 0.5], [x1 - 0.5, y1 - 0.5]])
    mapped = corners @ to_upload[:, :2].T + to_upload[:, 2] + 0.5
    ux0 = max(0, min(width, math.floor(mapped[:, 0].min())))
    uy0 = max(0, min(height, math.floor(mapped[:, 1].min())))
    ux1 = max(0, min(width, math.ceil(mapped[:, 0].max())))
    uy1 = max(0, min(height, math.ceil(mapped[:, 1].max())))
    share = (ux1 - ux0) * (uy1 - uy0) / float(width * height) if width and height else 0.0
    return Box(ux0, uy0, ux1, uy1, share)


def _footprint(
    alignment: Alignment, upload_rgb: np.ndarray, frame: tuple[int, int, int, int]
) -> tuple[Box, float, Box | None]:
    """Where the original's ``frame`` lies in the upload, the share of the upload outside it that is another
    picture's (content, not a constant fill such as rotation corners or a letterbox), and that content's box."""
    height, width = upload_rgb.shape[:2]
    x0, y0, x1, y1 = frame
    to_upload = cv2.invertAffineTransform(alignment.matrix)
    corners = np.array([[x0 - 0.5, y0 - 0.5], [x1 - 0.5, y0 - 0.5], [x1 - 0.5, y1 - 0.5], [x0 - 0.5, y1 - 0.5]])
    mapped = corners @ to_upload[:, :2].T + to_upload[:, 2] + 0.5
    inside = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(inside, np.rint(mapped).astype(np.int32), 255)
    box = _to_upload_box(alignment, (x0, y0, x1, y1), (width, height))
    rows, cols = height // CELL, width // CELL
    if rows == 0 or cols == 0:
        return box, 0.0, None
    outside = _cells((inside == 0).astype(np.float32), rows, cols) == 1.0
    grey = cv2.cvtColor(upload_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = _cells(grey, rows, cols)
    spread = np.sqrt(np.maximum(_cells(grey * grey, rows, cols) - mean * mean, 0.0))
    content = outside & (spread > FLAT_STD)
    if not content.any():
        return box, 0.0, None
    ys, xs = np.nonzero(content)
    share = float(content.sum()) / float(rows * cols)
    # A picture pasted onto a plain background is still a composite: once some content shows around it, the whole
    # area outside counts (the plain part of a host is part of the host).
    if float(content.sum()) >= HOST_CONTENT_SHARE * float(outside.sum()):
        share = float(outside.sum()) / float(rows * cols)
    bx0, by0 = int(xs.min()) * CELL, int(ys.min()) * CELL
    bx1, by1 = (int(xs.max()) + 1) * CELL, (int(ys.max()) + 1) * CELL
    outside_box = Box(bx0, by0, bx1, by1, (bx1 - bx0) * (by1 - by0) / float(width * height))
    return box, share, outside_box


def _matching_blocks(shared: _Shared, area: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of ``MATCH_BLOCK`` pixels inside ``area``: does the aligned upload show the original there?

    Local normalised correlation of the band-pass detail (indifferent to light and colour changes, blind
    to smooth gradients); a block without detail never matches. Returns (covered blocks, matching blocks,
    blocks with detail on either side).
    """
    rows, cols = shared.ncc.shape
    if rows == 0 or cols == 0:
        empty = np.zeros((rows, cols), bool)
        return empty, empty, empty
    covered = _cells(area.astype(np.float32), rows, cols, MATCH_BLOCK) == 1.0  # wholly inside the area
    return covered, covered & shared.both & (shared.ncc >= MIN_BLOCK_CORRELATION), shared.textured


def compare(alignment: Alignment, upload_rgb: np.ndarray, original_rgb: np.ndarray) -> ContentComparison:
    """Compare the aligned upload with the original (see the module docstring).

    The part of the original the upload shows is the largest connected area of blocks that agree
    (detail that correlates, or flat blocks of the same colour); its box is what a composite contains.
    When the whole covered area does not match, that area is compared on its own: a region of the
    original pasted into another picture covers the whole original once aligned, but shows it only
    where it was pasted.
    """
    shared = _Shared.of(alignment.aligned, original_rgb)  # computed once for every comparison below
    whole = _compare_within(alignment, alignment.mask, upload_rgb, original_rgb, shared)
    shown = _shown_box(alignment, shared)
    if shown is None:
        return whole
    if whole.matches:
        x0, y0, x1, y1 = _grown(shown, alignment)
        if float(alignment.mask[y0:y1, x0:x1].sum()) >= SHOWN_SHARE * float(alignment.mask.sum()):
            return whole  # the upload shows (nearly) all it covers: no pasted region to look for
        result = _compare_within(
            alignment, alignment.mask, upload_rgb, original_rgb, shared, region_box=_grown(shown, alignment)
        )
    else:
        # Compared where whole blocks agree (the pasted region's ragged edge carries the host); its footprint in
        # the upload is the box grown by one block.
        x0, y0, x1, y1 = shown
        region = np.zeros_like(alignment.mask)
        region[y0:y1, x0:x1] = True
        result = _compare_within(
            alignment, alignment.mask & region, upload_rgb, original_rgb, shared, region_box=_grown(shown, alignment)
        )
        if not result.matches:
            return whole
    # Only a composite needs its mark read within the part it shows; elsewhere the whole covered area counts.
    return replace(result, shown=shown if result.contained_region is not None else None)


def _shown_box(alignment: Alignment, shared: _Shared) -> tuple[int, int, int, int] | None:
    """The original-frame box of the largest connected area where the upload shows the original; None: no such area."""
    covered, matching, _ = _matching_blocks(shared, alignment.mask)
    if not matching.any():
        return None
    closed = cv2.morphologyEx(matching.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) & covered
    count, _, stats, _ = cv2.connectedComponentsWithStats(closed.astype(np.uint8), connectivity=4)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, area = (int(v) for v in stats[largest])
    if area < MIN_COMPOSITE_BLOCKS or area < 0.5 * w * h:  # scattered agreement is chance, not a shown region
        return None
    side = MATCH_BLOCK
    return (x * side, y * side, (x + w) * side, (y + h) * side)


def _grown(box: tuple[int, int, int, int], alignment: Alignment) -> tuple[int, int, int, int]:
    """Blocks only count when wholly covered and matching: grow the box by one block (the partly covered edge of
    a crop or of a pasted region) for the footprint, but never beyond what the upload covers of the original."""
    side = MATCH_BLOCK
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = alignment.crop_box
    return (max(cx0, x0 - side), max(cy0, y0 - side), min(cx1, x1 + side), min(cy1, y1 + side))


def _compare_within(
    alignment: Alignment,
    mask: np.ndarray,
    upload_rgb: np.ndarray,
    original_rgb: np.ndarray,
    shared: _Shared,
    region_box: tuple[int, int, int, int] | None = None,
) -> ContentComparison:
    """The cell comparison over ``mask``; ``region_box``: the original-frame box a composite shows."""
    out_h, out_w = original_rgb.shape[:2]
    rows, cols = out_h // CELL, out_w // CELL
    upload_size = (upload_rgb.shape[1], upload_rgb.shape[0])
    if rows == 0 or cols == 0:
        return ContentComparison(0.0, 0.0, 0, 0.0)
    covered = _cells(mask.astype(np.float32), rows, cols) == 1.0
    count = int(covered.sum())
    if count < MIN_REGION_CELLS:
        return ContentComparison(0.0, 0.0, 0, 0.0)
    ours, original_cells = shared.cells
    theirs = _predicted(original_cells, ours, covered)
    delta = np.abs(ours - theirs)
    difference = np.maximum(delta[..., 0], CHROMA_WEIGHT * delta[..., 1:].max(axis=2))
    correlation = _structure(shared.detail, mask)
    blocks_covered, blocks_matching, blocks_textured = _matching_blocks(shared, mask)
    textured_blocks = int((blocks_covered & blocks_textured).sum())
    # Share of the detailed blocks whose detail correlates: one dominant shared edge (the rim of a circular
    # picture, a horizon) lifts the global correlation of unrelated pictures, never this.
    agreement = float(blocks_matching.sum()) / textured_blocks if textured_blocks >= MIN_TEXTURED_BLOCKS else None
    if correlation is None:
        # A flat picture has no structure to correlate: it matches when its colour does.
        correlation = 1.0 if float(np.median(difference[covered])) < MIN_CELL_DIFFERENCE else 0.0
    values = difference[covered]
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    threshold = max(MIN_CELL_DIFFERENCE, median + NOISE_SIGMAS * spread)
    changed = covered & (difference > threshold)
    unchanged_share = 1.0 - float(changed.sum()) / count
    regions: list[Box] = []
    labels_count, _, stats, _ = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    for label in range(1, labels_count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < MIN_REGION_CELLS:
            continue
        box = (x * CELL, y * CELL, (x + w) * CELL, (y + h) * CELL)
        regions.append(_to_upload_box(alignment, box, upload_size))
    frame = region_box or (0, 0, out_w, out_h)
    footprint, outside_share, outside_box = _footprint(alignment, upload_rgb, frame)
    contained = footprint if outside_share >= COMPOSITE_SHARE else None
    if contained is not None:
        regions = []  # the rest of a composite differs by definition; its region is the finding
    if contained is None and outside_box is not None and outside_share >= MIN_ADDED_SHARE:
        regions.append(outside_box)  # content added around the picture (a caption bar, a border with text)
    regions.sort(key=lambda r: -r.share)
    return ContentComparison(
        correlation=correlation,
        block_agreement=agreement,
        unchanged_share=unchanged_share,
        cells_compared=count,
        threshold=threshold,
        edited_regions=regions,
        contained_region=contained,
        outside_share=outside_share,
    )


def band_pass(rgb: np.ndarray) -> np.ndarray:
    """Luminance detail between fine texture and shading: a difference of Gaussians (sigma 1.5 and 5 pixels).

    What a re-encode, a resize to a quarter or a denoise keep of a picture, and what no light or colour
    change, gradient or mark residual supplies: unrelated pictures correlate near 0 on it.
    """
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.GaussianBlur(grey, (0, 0), 1.5) - cv2.GaussianBlur(grey, (0, 0), 5.0)


def _structure(detail: tuple[np.ndarray, np.ndarray], mask: np.ndarray) -> float | None:
    """Pearson correlation of the band-pass detail over ``mask``; None when either side has no detail."""
    a, o = detail[0][mask], detail[1][mask]
    if a.size < 64:
        return None
    a = a - a.mean()
    o = o - o.mean()
    energy_a, energy_o = float(np.dot(a, a)), float(np.dot(o, o))
    if energy_a < 0.25 * a.size or energy_o < 0.25 * o.size:  # detail std under 0.5 levels: nothing to correlate
        return None
    return float(np.dot(a, o)) / math.sqrt(energy_a * energy_o)


def pixels_identical(upload_rgb: np.ndarray, original_rgb: np.ndarray) -> bool:
    """Whether two decoded pictures are the same pixels (a container change: metadata, chunks, appended bytes)."""
    return upload_rgb.shape == original_rgb.shape and bool(np.array_equal(upload_rgb, original_rgb))
