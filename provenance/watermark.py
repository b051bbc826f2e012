"""Stage 2, watermark: an invisible, error-corrected record id in the pixels.

The mark is ``invisible-watermark``'s DWT-DCT-SVD scheme: the image goes to YUV, the U channel
through a one-level Haar DWT, and each 4x4 block of the approximation band carries one payload bit
in the quantisation of its largest singular value. Blocks cycle through the payload bits, so every
bit is repeated hundreds of times and the decoder takes a majority vote.

The library embeds block by block in a Python loop (about 65 ms for 512x512). We keep its colour
conversion, DWT and bit layout, and only replace the per-block loop with one batched NumPy SVD.
DCT is orthonormal, so the singular values of ``dct(block)`` are those of ``block``, and changing
the largest one by ``d`` adds ``d * u0 v0^T`` to the block: the same arithmetic in one pass.
Tests check that the library's own decoder reads our marks and ours reads its marks.

Payload: a 32-bit watermark id followed by Reed-Solomon parity (6 bytes, correcting up to three
wrong bytes). A decode only counts when the codeword is valid, which keeps the chance of reading
an id out of an unmarked image around 1e-5 per attempt, before the id must also exist as a record.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from imwatermark.dwtDctSvd import EmbedDwtDctSvd
from reedsolo import ReedSolomonError, RSCodec

ID_BYTES = 4
PARITY_BYTES = 6
PAYLOAD_BITS = (ID_BYTES + PARITY_BYTES) * 8
SCALES = [0, 48, 0]  # U channel only; 48 instead of the library default 36 survives JPEG 75 and 50 on photos
BLOCK = 4
MIN_PIXELS = 256 * 256  # the library refuses smaller images
METHOD = "invisible-watermark/dwtDctSvd"
# Rescalings tried when the image as given does not decode: a copy resized by these factors gets
# back to the original block grid. 1.0 first, so an unmodified copy costs one decode.
RESCALE_FACTORS = (1.0, 2.0, 1.5, 4 / 3)

_rs = RSCodec(PARITY_BYTES)


def largest_singular_values(blocks: np.ndarray) -> np.ndarray:
    """Largest singular value of each block, as sqrt of the top eigenvalue of B^T B.

    Same value as ``np.linalg.svd(...)[1][:, 0]`` to ~1e-13, and about 1.6x faster for 4x4 blocks.
    """
    gram = np.matmul(blocks.transpose(0, 2, 1), blocks)
    return np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0))


class FastDwtDctSvd(EmbedDwtDctSvd):
    """``EmbedDwtDctSvd`` with its loops vectorised; identical bit layout and arithmetic.

    ``encode_frame`` batches the per-block SVD, ``encode`` writes the one-level Haar transform out
    in NumPy; reading uses ``vote_fractions``. Tests check against the library's own encoder and
    decoder both ways.
    """

    def _blocks(self, frame: np.ndarray) -> tuple[np.ndarray, int, int]:
        rows, cols = frame.shape[0] // self._block, frame.shape[1] // self._block
        b = self._block
        blocks = frame[: rows * b, : cols * b].reshape(rows, b, cols, b).swapaxes(1, 2).reshape(-1, b, b)
        return blocks, rows, cols

    def encode(self, bgr: np.ndarray) -> np.ndarray:
        """The library's ``encode`` with its Haar DWT written out (``pywt`` costs ~14 ms at 512x512).

        Only the approximation band changes, and changing a Haar approximation coefficient by ``d``
        moves each of its 2x2 pixels by ``d / 2``. The library rebuilds each channel with the
        horizontal and vertical detail bands swapped (``idwt2((ca, (v, h, d)))``), which transposes
        every 2x2 block; we do the same, so its decoder and ours read identical marks.
        """
        row, col = bgr.shape[:2]
        rows, cols = row // 4 * 4, col // 4 * 4
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
        for channel in range(2):
            if self._scales[channel] <= 0:
                continue
            plane = yuv[:rows, :cols, channel].astype(np.float64)
            ca = (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) / 2
            marked = ca.copy()
            self.encode_frame(marked, self._scales[channel])
            rebuilt = plane.reshape(rows // 2, 2, cols // 2, 2).transpose(0, 3, 2, 1).reshape(rows, cols)
            rebuilt += np.repeat(np.repeat((marked - ca) / 2, 2, axis=0), 2, axis=1)
            yuv[:rows, :cols, channel] = rebuilt  # the same unsafe float -> uint8 cast as the library
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)

    def encode_frame(self, frame: np.ndarray, scale: float) -> None:
        blocks, rows, cols = self._blocks(frame)
        bits = np.resize(np.asarray(self._watermarks, dtype=np.float64), blocks.shape[0])
        u, s, vt = np.linalg.svd(blocks)
        s0 = s[:, 0]
        target = (s0 // scale + 0.25 + 0.5 * bits) * scale
        blocks = blocks + (target - s0)[:, None, None] * (u[:, :, 0, None] * vt[:, None, 0, :])
        b = self._block
        frame[: rows * b, : cols * b] = blocks.reshape(rows, cols, b, b).swapaxes(1, 2).reshape(rows * b, cols * b)

    def vote_fractions(self, rgb: np.ndarray) -> np.ndarray:
        """Fraction of blocks voting 1 for each payload bit (0.5 means no information).

        The library's decode path, computed directly: YUV from RGB, the Haar approximation band
        of U as ``(a + b + c + d) / 2`` over 2x2 pixels (what ``pywt.dwt2(..., "haar")`` returns,
        13x faster), then one vote per 4x4 block.
        """
        row, col = rgb.shape[:2]
        u = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)[: row // 4 * 4, : col // 4 * 4, 1].astype(np.float64)
        ca1 = (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2]) / 2
        blocks, _, _ = self._blocks(ca1)
        votes = ((largest_singular_values(blocks) % SCALES[1]) > SCALES[1] * 0.5).astype(np.float64)
        index = np.arange(votes.shape[0]) % self._wmLen
        sums = np.bincount(index, weights=votes, minlength=self._wmLen)
        counts = np.bincount(index, minlength=self._wmLen)
        return sums / np.maximum(counts, 1)


def encode_payload(watermark_id: int) -> np.ndarray:
    """The bits embedded for an id: id big-endian, then Reed-Solomon parity."""
    if not 0 <= watermark_id < 2 ** (8 * ID_BYTES):
        raise ValueError("watermark id must fit in 32 bits")
    codeword = bytes(_rs.encode(watermark_id.to_bytes(ID_BYTES, "big")))
    return np.unpackbits(np.frombuffer(codeword, dtype=np.uint8))


def decode_payload(bits: np.ndarray) -> tuple[int, int] | None:
    """Return (watermark_id, corrected byte errors) for a valid codeword, else None."""
    codeword = np.packbits(bits.astype(np.uint8)).tobytes()
    try:
        message, _, errata = _rs.decode(codeword)
    except ReedSolomonError:
        return None
    return int.from_bytes(bytes(message), "big"), len(errata)


def can_mark(width: int, height: int) -> bool:
    """Whether the image is big enough for the library's scheme."""
    return width * height >= MIN_PIXELS and width >= 2 * BLOCK * 2 and height >= 2 * BLOCK * 2


def embed(rgb: np.ndarray, watermark_id: int) -> np.ndarray:
    """Return a copy of ``rgb`` (HxWx3 uint8) carrying ``watermark_id``."""
    bits = encode_payload(watermark_id)
    coder = FastDwtDctSvd(watermarks=list(bits), wmLen=PAYLOAD_BITS, scales=SCALES, block=BLOCK)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    marked_bgr = coder.encode(bgr)
    return np.ascontiguousarray(marked_bgr[:, :, ::-1])


@dataclass(frozen=True)
class Detection:
    """What the decoder found. ``watermark_id`` is None when no valid codeword was read."""

    detected: bool
    watermark_id: int | None = None
    corrected_errors: int = 0  # Reed-Solomon byte errors corrected
    bit_errors: int = 0  # payload bits that differed from the corrected codeword
    scale: float = 1.0  # rescaling that made the payload readable
    reason: str | None = None


def _decode_once(rgb: np.ndarray) -> tuple[int, int, int] | None:
    coder = FastDwtDctSvd(watermarks=[], wmLen=PAYLOAD_BITS, scales=SCALES, block=BLOCK)
    bits = coder.vote_fractions(np.ascontiguousarray(rgb)) > 0.5
    found = decode_payload(bits)
    if found is None:
        return None
    watermark_id, corrected = found
    bit_errors = int(np.count_nonzero(encode_payload(watermark_id) != bits))
    return watermark_id, corrected, bit_errors


def detect(rgb: np.ndarray, *, factors: tuple[float, ...] = RESCALE_FACTORS) -> Detection:
    """Look for a payload, first in the image as given, then in rescaled copies.

    A resized copy has lost the block grid it was marked on; scaling it back by the inverse of a
    common resize factor (0.5x, 2/3x, 3/4x) restores that grid closely enough to read the bits.
    """
    height, width = rgb.shape[:2]
    for factor in factors:
        if factor == 1.0:
            candidate = rgb
        else:
            size = (round(width * factor), round(height * factor))
            candidate = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        if not can_mark(candidate.shape[1], candidate.shape[0]):
            continue
        found = _decode_once(candidate)
        if found is not None:
            watermark_id, corrected, bit_errors = found
            return Detection(True, watermark_id, corrected, bit_errors, factor)
    if not can_mark(width, height) and width * height * max(factors) ** 2 < MIN_PIXELS:
        return Detection(False, reason="image too small to carry a watermark")
    return Detection(False, reason="no valid watermark payload found")
