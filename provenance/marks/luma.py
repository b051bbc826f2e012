"""Stage 2, watermark, second component: the payload again, in luminance, read against a stored reference.

The design (embedding, the informed reading, why the exact null of ``provenance.marks.confirm`` still
applies, why the reference stays secret) is in docs/architecture.md, section "The luminance mark".
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

PAYLOAD_BITS = 80
CELL_BASE = 8  # pixels a side at 512x512 (one cell per 8x8 JPEG block of the original)
MIN_STRENGTH = 0.8  # peak amplitude in levels of 255 on flat areas
MAX_STRENGTH = 5.0  # and on the most textured ones
TEXTURE_GAIN = 0.3  # peak amplitude per level of local high-pass RMS
LAYOUT_GROUPS = 64
LAYOUT_PERIOD = PAYLOAD_BITS * LAYOUT_GROUPS
TONE_BANDS = 32
MIN_SLOPE, MAX_SLOPE = 0.25, 4.0  # a tone curve's local slope, clipped: a band fit on few cells can be steep
NEIGHBOURHOOD = 5  # cells a side of the window whose mean is subtracted (the edit's smooth part)
CLIP_SIGMAS = 3.0
NOISE_FLOOR = 0.1  # levels: a copy identical to the original has no noise at all
STRIPE_PIXELS = 1 << 22  # embedding and reading work on stripes of about 4 MP (memory)
_REFERENCE_MAGIC = b"PLR1"


def cell_size(width: int, height: int) -> int:
    """Cell side in pixels: 8 up to about 768x768, then 8 more per 512 pixels of the geometric mean side."""
    return CELL_BASE * max(1, round(math.sqrt(width * height) / 512))


def bump(cell: int) -> np.ndarray:
    """The separable half-sine bump of one cell (peak about 1, zero outside the cell)."""
    profile = np.sin(np.pi * (np.arange(cell) + 0.5) / cell)
    return np.outer(profile, profile)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    pixels = rgb.astype(np.float32)
    return 0.299 * pixels[..., 0] + 0.587 * pixels[..., 1] + 0.114 * pixels[..., 2]


@dataclass(frozen=True, eq=False)
class LumaLayout:
    """Which payload bit each cell carries (``bits``) and its keyed sign (``chips``, +1 or -1), by reading order."""

    bits: np.ndarray
    chips: np.ndarray

    @classmethod
    def from_secret(cls, secret: bytes) -> LumaLayout:
        """The keyed layout: SHAKE-256 of ``HMAC-SHA256(key, "provenance luma layout v1")``.

        Plain arithmetic on a standard hash (as ``watermark.MarkLayout``), so a stored mark's layout never
        changes with a library upgrade. The label differs from the payload mask's and the chroma layout's.
        """
        seed = hmac.new(secret, b"provenance luma layout v1", hashlib.sha256).digest()
        stream = hashlib.shake_256(seed).digest(LAYOUT_PERIOD * 8 + LAYOUT_PERIOD // 8)
        sort_keys = np.frombuffer(stream, dtype=">u8", count=LAYOUT_PERIOD).reshape(LAYOUT_GROUPS, PAYLOAD_BITS)
        bits = np.argsort(sort_keys, axis=1, kind="stable").astype(np.int64).ravel()
        signs = np.unpackbits(np.frombuffer(stream, dtype=np.uint8, offset=LAYOUT_PERIOD * 8))
        return cls(bits, signs.astype(np.float64) * 2 - 1)

    def of_cells(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Payload bit and sign of cells ``0 .. count - 1`` (the layout repeats every ``LAYOUT_PERIOD`` cells)."""
        index = np.arange(count) % self.bits.shape[0]
        return self.bits[index], self.chips[index]


@dataclass(frozen=True, eq=False)
class LumaReference:
    """What the service keeps to read a record's luminance mark: the unmarked picture's cell values.

    ``host[r, c]``: bump-weighted mean luminance of cell (r, c) before the mark; ``strength``: the
    mark's peak amplitude there. Secret like the mark key: never published (see the module docstring).
    """

    cell: int
    host: np.ndarray  # float32 (rows, cols)
    strength: np.ndarray  # float32 (rows, cols)

    @property
    def rows(self) -> int:
        """Rows of cells."""
        return int(self.host.shape[0])

    @property
    def cols(self) -> int:
        """Columns of cells."""
        return int(self.host.shape[1])

    def to_bytes(self) -> bytes:
        """The stored form: a header (magic, cell size, rows, columns), then the two planes zlib-compressed."""
        header = _REFERENCE_MAGIC + struct.pack(">HII", self.cell, self.rows, self.cols)
        body = self.host.astype("<f4").tobytes() + self.strength.astype("<f4").tobytes()
        return header + zlib.compress(body, 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> LumaReference:
        """Parse ``to_bytes``' output; ``ValueError`` for anything else."""
        if len(data) < 14 or data[:4] != _REFERENCE_MAGIC:
            raise ValueError("not a luminance mark reference")
        cell, rows, cols = struct.unpack(">HII", data[4:14])
        try:
            body = zlib.decompress(data[14:])
        except zlib.error as exc:
            raise ValueError(f"corrupt luminance mark reference: {exc}") from None
        if cell < 1 or len(body) != rows * cols * 8:
            raise ValueError("luminance mark reference of the wrong size")
        values = np.frombuffer(body, dtype="<f4").astype(np.float32)
        return cls(cell, values[: rows * cols].reshape(rows, cols), values[rows * cols :].reshape(rows, cols))


def _stripes(rows: int, cols: int, cell: int) -> list[tuple[int, int]]:
    step = max(1, STRIPE_PIXELS // max(1, cols * cell * cell))
    return [(first, min(rows, first + step)) for first in range(0, rows, step)]


def _cell_means(plane: np.ndarray, cell: int, weights: np.ndarray) -> np.ndarray:
    """Bump-weighted mean of each whole cell of ``plane`` (rows x cols)."""
    rows, cols = plane.shape[0] // cell, plane.shape[1] // cell
    blocks = plane[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell)
    return np.einsum("rycx,yx->rc", blocks, weights, dtype=np.float64) / float(weights.sum())


def _strength(rgb: np.ndarray, cell: int, rows: int, cols: int) -> np.ndarray:
    """Perceptual masking: the mark's peak amplitude per cell from the local high-pass energy of luminance."""
    energy = np.zeros((rows, cols))
    sigma = cell / 4
    for first, last in _stripes(rows, cols, cell):
        top, bottom = max(0, (first - 1) * cell), min(rgb.shape[0], (last + 1) * cell)  # one cell of context
        luma = _luminance(rgb[top:bottom, : cols * cell])
        high: np.ndarray = luma - cv2.GaussianBlur(luma, (0, 0), sigma)
        high = high * high
        offset = first * cell - top
        part = high[offset : offset + (last - first) * cell]
        energy[first:last] = part.reshape(last - first, cell, cols, cell).mean(axis=(1, 3))
    around = cv2.blur(energy, (3, 3), borderType=cv2.BORDER_REFLECT)  # the neighbourhood masks too
    # max(0): the box filter's running sums leave -1e-12 where the energy is 0 (a saturated, flat area)
    return np.clip(TEXTURE_GAIN * np.sqrt(np.maximum(around, 0.0)), MIN_STRENGTH, MAX_STRENGTH).astype(np.float32)


def embed_luma(rgb: np.ndarray, bits: np.ndarray, layout: LumaLayout) -> tuple[np.ndarray, LumaReference]:
    """Return ``rgb`` (HxWx3 uint8) carrying ``bits`` (80 zeros and ones) in luminance, and its reference."""
    height, width = rgb.shape[:2]
    cell = cell_size(width, height)
    rows, cols = height // cell, width // cell
    weights = bump(cell).astype(np.float32)
    strength = _strength(rgb, cell, rows, cols)
    host = np.zeros((rows, cols), dtype=np.float32)
    cell_bits, chips = layout.of_cells(rows * cols)
    signs = (np.asarray(bits, dtype=np.float64)[cell_bits] * 2 - 1) * chips
    amplitude = (signs.reshape(rows, cols) * strength).astype(np.float32)
    out = rgb.copy()
    for first, last in _stripes(rows, cols, cell):
        stripe = out[first * cell : last * cell, : cols * cell]
        host[first:last] = _cell_means(_luminance(stripe), cell, weights)
        delta = (amplitude[first:last, None, :, None] * weights[None, :, None, :]).reshape(stripe.shape[:2])
        # rint(pixel + delta) is pixel + rint(delta) for integer pixels: add the rounded change with uint8 saturation
        # (OpenCV's add/subtract), the same bytes as clipping the float sum, several times faster.
        step = np.rint(delta).astype(np.int16)
        up = cv2.merge([np.clip(step, 0, 255).astype(np.uint8)] * 3)
        down = cv2.merge([np.clip(-step, 0, 255).astype(np.uint8)] * 3)
        stripe[...] = cv2.subtract(cv2.add(stripe, up), down)
    return out, LumaReference(cell, host, strength)


@dataclass(frozen=True)
class LumaEvidence:
    """Per payload bit: the summed soft evidence of the cells read (sign: the bit read) and their count."""

    score_sums: np.ndarray
    counts: np.ndarray

    @property
    def cells(self) -> int:
        """Cells that were read, over all payload bits."""
        return int(self.counts.sum())


def _tone_curve(host: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted curve from host to upload cell values: prediction and local slope at each cell."""
    edges = np.quantile(host, np.linspace(0.0, 1.0, TONE_BANDS + 1))
    band = np.clip(np.searchsorted(edges, host, side="right") - 1, 0, TONE_BANDS - 1)
    centres, levels = [], []
    for index in range(TONE_BANDS):
        inside = band == index
        if np.count_nonzero(inside) >= 3:
            centres.append(float(np.median(host[inside])))
            levels.append(float(np.median(seen[inside])))
    if len(centres) < 2:
        return seen.mean() + (host - host.mean()), np.ones_like(host)
    x, unique = np.unique(np.array(centres), return_index=True)
    y = np.maximum.accumulate(np.array(levels)[unique])
    if x.size < 2:
        return seen.mean() + (host - host.mean()), np.ones_like(host)
    predicted = np.interp(host, x, y)
    slopes = np.diff(y) / np.maximum(np.diff(x), 1e-3)
    slope = np.interp(host, (x[1:] + x[:-1]) / 2, slopes)
    return predicted, np.clip(slope, MIN_SLOPE, MAX_SLOPE)


def luma_evidence(
    aligned_rgb: np.ndarray, mask: np.ndarray | None, reference: LumaReference, layout: LumaLayout
) -> LumaEvidence:
    """Soft-read the luminance mark on an upload aligned to the original's frame (see the module docstring).

    ``aligned_rgb`` has the original's size; only cells wholly inside ``mask`` (the pixels the upload
    shows) are read.
    """
    cell, rows, cols = reference.cell, reference.rows, reference.cols
    if aligned_rgb.shape[0] < rows * cell or aligned_rgb.shape[1] < cols * cell:
        raise ValueError("the aligned upload is smaller than the reference's grid")
    weights = bump(cell).astype(np.float32)
    seen = np.zeros((rows, cols))
    for first, last in _stripes(rows, cols, cell):
        seen[first:last] = _cell_means(_luminance(aligned_rgb[first * cell : last * cell]), cell, weights)
    valid: np.ndarray
    if mask is None:
        valid = np.ones((rows, cols), dtype=bool)
    else:
        valid = np.asarray(mask[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).all(axis=(1, 3)))
    empty = LumaEvidence(np.zeros(PAYLOAD_BITS), np.zeros(PAYLOAD_BITS, dtype=np.int64))
    if np.count_nonzero(valid) < 2 * PAYLOAD_BITS:
        return empty
    host = reference.host.astype(np.float64)
    predicted, slope = _tone_curve(host[valid], seen[valid])
    residual = np.zeros((rows, cols))
    gain = np.zeros((rows, cols))
    residual[valid] = seen[valid] - predicted
    gain[valid] = slope
    # The edit's smooth part: the mean residual of the valid neighbours (the mark's signs average out there).
    window = (NEIGHBOURHOOD, NEIGHBOURHOOD)
    inside = valid.astype(np.float64)
    total = cv2.boxFilter(residual, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(inside, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    local = np.where(count > 1, (total - residual) / np.maximum(count - 1, 1), 0.0)
    detail = np.where(valid, residual - local, 0.0)
    power = cv2.boxFilter(detail * detail, -1, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    noise = np.sqrt(np.maximum(power, 0.0) / np.maximum(count, 1)) + NOISE_FLOOR
    expected = gain * reference.strength * (np.pi**2 / 16)  # the bump's weighted mean of itself: pi^2 / 16
    cell_bits, chips = layout.of_cells(rows * cols)
    score = (np.clip(detail / noise, -CLIP_SIGMAS, CLIP_SIGMAS) * expected / noise).ravel() * chips
    flat_valid = valid.ravel()
    sums = np.bincount(cell_bits[flat_valid], weights=score[flat_valid], minlength=PAYLOAD_BITS)
    counts = np.bincount(cell_bits[flat_valid], minlength=PAYLOAD_BITS)
    return LumaEvidence(sums, counts)
