"""Stage 2, watermark: an invisible, error-corrected record id in the pixels.

Two components carry the same payload: this module's, in the U chroma channel, read blind; and
``provenance.marks.luma``'s, in luminance, read against a reference the service stores per record (it
survives black and white, hue shifts, gamma, JPEG 30). ``mark`` embeds both, luminance first.

The mark uses the arithmetic of ``invisible-watermark``'s DWT-DCT-SVD scheme: the image goes to YUV,
the U channel through a one-level Haar DWT, and each 4x4 block of the approximation band carries one
payload bit in the quantisation of its largest singular value ``s0`` (step 48). Every bit is carried
by about 1/80 of the blocks, and the decoder takes a majority vote.

What is not the library's: the layout is keyed. The library puts bit ``k % 80`` in block ``k`` on
the fixed lattice ``s0 // 48``, so its stock decoder reads the 80 raw bits of any such mark and its
encoder replays them into another picture without any secret. Here the secret ``MarkKey`` also
decides (``MarkLayout``) which payload bit each block carries (a keyed balanced sequence: each run of
80 blocks is a keyed permutation of the 80 bits) and shifts each block's quantisation lattice by a
keyed dither ``d_k`` in [0, 48). Same step, same strength, same PSNR; the stock decoder reads chance
on our marks, and its marks read nothing here (tests check both).

The library embeds block by block in a Python loop (about 65 ms for 512x512). We keep its colour
conversion and DWT, and replace the per-block loop with one batched NumPy SVD. DCT is orthonormal, so
the singular values of ``dct(block)`` are those of ``block``, and changing the largest one by ``d``
adds ``d * u0 v0^T`` to the block: the same arithmetic in one pass.

Payload: the 80-bit keyed codeword of ``provenance.marks.payload`` (sealed id, Reed-Solomon parity,
keyed mask); ``MarkKey`` holds the secret and the layouts it derives.

Not covered here: a copy attack. Reading the raw bits without the key is no longer possible (the
stock decoder reads chance), and replaying what it reads with the stock encoder gives nothing a blind
read accepts and only a faint echo after alignment (see ``provenance.marks.confirm``). But an attacker can
still copy a marked image's block phases (``s0`` modulo 48, whatever the key put there) or an
estimated mark residual into other content, and the copy carries the mark. The mark says "this
picture came from record X's pixels", not "these are record X's bytes": binding the mark to the
record's content is the verifier's job (``verify``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from provenance.marks.luma import LumaReference, embed_luma

# The payload codec's names stay importable from here, where callers have always found them.
from provenance.marks.payload import (  # noqa: F401
    ID_BYTES,
    LAYOUT_GROUPS,
    LAYOUT_PERIOD,
    LAYOUT_VERSION,
    LEGACY_LAYOUT,
    PARITY_BYTES,
    PAYLOAD_BITS,
    MarkKey,
    MarkLayout,
    codeword_acceptance_probability,
    decode_payload,
    encode_payload,
)

SCALES = [0, 48, 0]  # U channel only; 48 instead of the library default 36 survives JPEG 75 and 50 on photos
BLOCK = 4
MIN_PIXELS = 256 * 256  # the library refuses smaller images
METHOD = "invisible-watermark/dwtDctSvd"
# Rescalings tried when the image as given does not decode: a copy resized by these factors gets
# back to the original block grid. 1.0 first, so an unmodified copy costs one decode.
RESCALE_FACTORS = (1.0, 2.0, 1.5, 4 / 3)
# Bounded working resolution: a rescaled try whose image would exceed this many pixels (2048x2048, about 4.2 MP)
# is skipped. Marks survive a resize back only from copies that were shrunk, and a copy of a 2048x2048 original
# shrunk by 1/2 still gets its x2 try; an upload larger than this is read as given (one striped pass), never
# upscaled: a 40 MP upload costs one read, not an x2 upscale to 160 MP.
MAX_RESCALE_PIXELS = 2048 * 2048

# Blind reads accept at most this many corrected bytes: 1.0e-8 per try, 4.2e-8 per image over the 4 rescalings.
MAX_BLIND_CORRECTIONS = 2


def largest_singular_values(blocks: np.ndarray, *, planar: bool = False) -> np.ndarray:
    """Largest singular value of each block: sqrt of the top eigenvalue of its Gram matrix ``B^T B``.

    ``blocks``: (n, rows, cols); with ``planar``, (rows, cols, n) (entry ``[k, i]`` of every block as one
    plane, what ``vote_fractions`` builds directly). The same value as ``np.linalg.svd(...)[1][:, 0]`` to
    about 1e-15 relative (``tests/unit/test_singular_values.py`` checks random, real, rank-deficient and zero
    blocks), and about 5x faster than a batched ``eigvalsh``, which spends microseconds of LAPACK overhead
    per 4x4 block: a blind read of a 1024x1024 upload and its rescalings holds ~150k blocks.

    How: power iteration on all blocks at once, with the Gram entries as planes over the blocks (every
    step is a vector operation over n). Start from the all-ones vector: a U-band block is dominated by its
    mean, so two or three steps converge. A block is accepted only with a certificate: for the Rayleigh
    quotient ``rho <= l1`` of the iterate and its residual ``eps``, Kato-Temple gives
    ``l1 <= rho + eps^2 / (rho - b)`` for any ``b >= l2`` with ``rho > b``, and ``b = trace - rho`` is one
    (``l2 <= trace - l1 <= trace - rho``). Accepted when that bound is within 1e-15 of ``rho``; blocks
    still uncertified after a few rounds (close top eigenvalues, a start orthogonal to the top
    eigenvector, non-finite input) go to ``eigvalsh``.
    """
    if planar:
        rows, cols, count = blocks.shape
        planes = blocks
    else:
        count, rows, cols = blocks.shape
        planes = np.ascontiguousarray(blocks.reshape(count, rows * cols).T).reshape(rows, cols, count)
    gram = np.einsum("kin,kjn->ijn", planes, planes)  # (cols, cols, n)
    trace = np.einsum("iin->n", gram)
    top = np.zeros(count)
    todo = np.flatnonzero(trace != 0)  # all-zero blocks: 0 (NaN and inf blocks go on, and end in eigvalsh)
    if todo.size < count:
        gram = gram[:, :, todo]
    limit = trace[todo]
    vector = np.ones((cols, todo.size))
    for _ in range(4):
        if todo.size == 0:
            break
        for _ in range(2):
            vector = np.einsum("ijn,jn->in", gram, vector)
        image = np.einsum("ijn,jn->in", gram, vector)
        norm2 = np.einsum("in,in->n", vector, vector)
        with np.errstate(all="ignore"):  # a vector that underflowed or overflowed fails the test below
            rho = np.einsum("in,in->n", vector, image) / norm2
            residual = image - rho * vector
            eps2 = np.einsum("in,in->n", residual, residual) / norm2
            gap = 2.0 * rho - limit  # rho - b with b = trace - rho >= l2
            certain = (norm2 > 1e-250) & (gap > 0) & (eps2 <= 1e-15 * gap * rho)
        top[todo[certain]] = rho[certain]
        if certain.all():
            todo = todo[:0]
            break
        left = ~certain
        todo, gram, limit, image = todo[left], gram[:, :, left], limit[left], image[:, left]
        with np.errstate(all="ignore"):
            vector = image / np.sqrt(np.einsum("in,in->n", image, image))  # rescaled: the next round starts at 1
    if todo.size:
        top[todo] = np.linalg.eigvalsh(np.ascontiguousarray(gram.transpose(2, 0, 1)))[:, -1]
    return np.sqrt(np.maximum(top, 0.0))


class FastDwtDctSvd:
    """``imwatermark``'s ``EmbedDwtDctSvd`` arithmetic, vectorised, with the block layout as a parameter.

    Kept from the library: the colour conversion (OpenCV YUV), the one-level Haar approximation band of
    U, 4x4 blocks, the quantisation of each block's largest singular value with step ``scales[1]`` and
    the decoder's rule (phase above one half votes 1). ``layout``: which bit each block carries and
    each block's lattice offset. ``None`` is the library's layout (bit ``k % wmLen``, no offset): with it
    this class embeds and reads what the library does, bit for bit, which tests and the benchmark use
    as the stock scheme. The service always passes the key's ``MarkLayout``, so the library's decoder
    cannot read its marks and its marks do not read here.

    ``encode_frame`` batches the per-block SVD, ``encode`` writes the one-level Haar transform out in
    NumPy; reading uses ``vote_fractions``. It does not import ``imwatermark``, which imports torch (for
    its rivaGan model): 1.5 s and hundreds of MB in every process that only needs this scheme.
    """

    def __init__(
        self,
        watermarks: list[int] | None = None,
        wmLen: int = 8,
        scales: list[int] | None = None,
        block: int = 4,
        layout: MarkLayout | None = None,
        nearest: bool = False,
    ) -> None:
        self._watermarks = list(watermarks or [])
        # True: move each singular value to the NEAREST level of its bit's phase (at most half a step) instead of
        # the level in its own cell (up to three quarters of a step, the library's rule). The phase a reader
        # sees, and so the margin to the decision boundaries, is the same; the picture changes less.
        self._nearest = nearest
        self._wmLen = wmLen
        self._scales = list(scales if scales is not None else [0, 36, 0])
        self._block = block
        self._layout = layout if layout is not None else MarkLayout.stock(wmLen)
        if int(self._layout.bits.max()) >= wmLen:
            raise ValueError("the layout names payload bits beyond wmLen")

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
        every 2x2 block of U: a distortion that carries no mark (the approximation band, which is all a
        decoder reads, is the same either way) and costs about 2.5 dB of PSNR on photos and 12 dB on
        noise-like images. We keep the detail bands where they are.
        """
        yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
        # Memory: the float work runs one stripe of block rows at a time (each block is marked on its own,
        # so the result is the same bytes), and pixels outside whole blocks are left as they are (d = 0).
        side = 2 * self._block  # one approximation-band block covers side x side pixels
        block_rows, block_cols = bgr.shape[0] // 4 * 2 // self._block, bgr.shape[1] // 4 * 2 // self._block
        for channel in range(2):
            if self._scales[channel] <= 0:
                continue
            for first, last in _stripes(block_rows, block_cols):
                plane = yuv[first * side : last * side, : block_cols * side, channel]  # uint8 view
                ca = plane[0::2, 0::2].astype(np.float64)
                ca += plane[1::2, 0::2]
                ca += plane[0::2, 1::2]
                ca += plane[1::2, 1::2]
                ca /= 2
                marked = ca.copy()
                self.encode_frame(marked, self._scales[channel], first_block=first * block_cols)
                marked -= ca
                marked /= 2
                for dy in (0, 1):
                    for dx in (0, 1):
                        # pixel + d / 2 in float64, then the same unsafe float -> uint8 cast as the library
                        plane[dy::2, dx::2] = plane[dy::2, dx::2] + marked
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)

    def encode_frame(self, frame: np.ndarray, scale: float, first_block: int = 0) -> None:
        """Mark every whole block of ``frame``; ``first_block``: the reading-order index of its first block.

        Block ``k`` with lattice offset ``d`` moves its largest singular value ``s0`` within its cell to
        ``(floor((s0 - d) / scale) + 0.25 + 0.5 * bit) * scale + d``: at most one step, as in the library
        (``d = 0`` is the library's lattice exactly); with ``nearest``, to the nearest level of that phase
        (at most half a step). A singular value cannot be negative, so a target below 0 (only when
        ``s0 < d``) moves up one step to the same phase.
        """
        blocks, rows, cols = self._blocks(frame)
        payload = np.asarray(self._watermarks, dtype=np.float64)
        bit_index, dither = self._layout.of_blocks(first_block, blocks.shape[0])
        bits = payload[bit_index]
        offset = dither * scale
        u, s, vt = np.linalg.svd(blocks)
        s0 = s[:, 0]
        if self._nearest:
            level = (0.25 + 0.5 * bits) * scale + offset
            target = level + np.rint((s0 - level) / scale) * scale
        else:
            target = ((s0 - offset) // scale + 0.25 + 0.5 * bits) * scale + offset
        target[target < 0] += scale
        step = u[:, :, 0, None] * vt[:, None, 0, :]
        del u, vt  # in place from here: no full-size temporaries
        step *= (target - s0)[:, None, None]
        blocks += step
        b = self._block
        frame[: rows * b, : cols * b] = blocks.reshape(rows, cols, b, b).swapaxes(1, 2).reshape(rows * b, cols * b)

    def vote_fractions(self, rgb: np.ndarray) -> np.ndarray:
        """Fraction of blocks voting 1 for each payload bit (0.5 means no information).

        The library's decode path, computed directly: YUV from RGB, the Haar approximation band
        of U as ``(a + b + c + d) / 2`` over 2x2 pixels (what ``pywt.dwt2(..., "haar")`` returns,
        13x faster), then one vote per 4x4 block: phase ``((s0 - d) mod step) / step`` above one half,
        counted for the payload bit the layout gives the block.
        """
        side = 2 * self._block
        step = float(self._scales[1])
        block_rows, block_cols = rgb.shape[0] // 4 * 2 // self._block, rgb.shape[1] // 4 * 2 // self._block
        sums = np.zeros(self._wmLen)
        counts = np.zeros(self._wmLen, dtype=np.int64)
        # One stripe of block rows at a time (memory); votes are 0 or 1, so the sums are exact either way.
        for first, last in _stripes(block_rows, block_cols):
            stripe = np.ascontiguousarray(rgb[first * side : last * side, : block_cols * side])
            u = cv2.cvtColor(stripe, cv2.COLOR_RGB2YUV)[:, :, 1]
            # Pixel (dy, dx) of every side x side tile as one contiguous plane (a uint8 copy), so that each entry
            # of each block's Haar approximation is a sum of four whole planes: the blocks come out as planes
            # (entry [k, i] of every block, in reading order), which is what largest_singular_values works on.
            rows = last - first
            tiles = np.ascontiguousarray(u.reshape(rows, side, block_cols, side).transpose(1, 3, 0, 2))
            planes = tiles[0::2, 0::2].astype(np.float64)
            planes += tiles[1::2, 0::2]
            planes += tiles[0::2, 1::2]
            planes += tiles[1::2, 1::2]
            planes /= 2
            index, dither = self._layout.of_blocks(first * block_cols, rows * block_cols)
            s0 = largest_singular_values(planes.reshape(self._block, self._block, -1), planar=True)
            votes = (((s0 - dither * step) % step) > step * 0.5).astype(np.float64)
            sums += np.bincount(index, weights=votes, minlength=self._wmLen)
            counts += np.bincount(index, minlength=self._wmLen)
        return sums / np.maximum(counts, 1)


def _stripes(block_rows: int, block_cols: int, blocks_per_stripe: int = 1 << 16) -> list[tuple[int, int]]:
    """Ranges of block rows holding about ``blocks_per_stripe`` blocks each (about 4 MP of pixels)."""
    step = max(1, blocks_per_stripe // max(1, block_cols))
    return [(first, min(block_rows, first + step)) for first in range(0, block_rows, step)]


def can_mark(width: int, height: int) -> bool:
    """Whether the image is big enough for the library's scheme."""
    return width * height >= MIN_PIXELS and width >= 2 * BLOCK * 2 and height >= 2 * BLOCK * 2


@dataclass(frozen=True, eq=False)
class MarkedPicture:
    """A marked image and, when it carries the luminance component, the reference the service keeps to read it."""

    rgb: np.ndarray
    luma_reference: LumaReference | None = None


def mark(rgb: np.ndarray, watermark_id: int, key: MarkKey, *, luma: bool = True) -> MarkedPicture:
    """Mark ``rgb`` (HxWx3 uint8) with ``watermark_id`` sealed with ``key``: luminance first, then chroma.

    The luminance component goes first so that its reference is the unmarked picture's (see
    ``provenance.marks.luma``); it moves R, G and B alike, so the chroma component embedded after it reads the
    same U plane either way. ``luma=False`` embeds the chroma component alone (the mark before issue 16).
    """
    reference: LumaReference | None = None
    if luma:
        rgb, reference = embed_luma(rgb, encode_payload(watermark_id, key), key.luma_layout)
    return MarkedPicture(embed(rgb, watermark_id, key), reference)


def embed(rgb: np.ndarray, watermark_id: int, key: MarkKey) -> np.ndarray:
    """Return a copy of ``rgb`` (HxWx3 uint8) carrying the chroma component of ``watermark_id`` sealed with ``key``."""
    bits = encode_payload(watermark_id, key)
    coder = FastDwtDctSvd(
        watermarks=list(bits), wmLen=PAYLOAD_BITS, scales=SCALES, block=BLOCK, layout=key.layout, nearest=True
    )
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
    tries: int = 0  # decodes attempted (each rescaling is one): each is a chance for a false positive
    # Chance that an unmarked image gives a codeword this close within this many tries.
    false_positive_probability: float | None = None
    layout_version: int = 2  # the layout the payload was read with (LEGACY_LAYOUT: a mark made before keyed layouts)


def _decode_once(rgb: np.ndarray, key: MarkKey) -> tuple[int, int, int] | None:
    coder = FastDwtDctSvd(watermarks=[], wmLen=PAYLOAD_BITS, scales=SCALES, block=BLOCK, layout=key.layout)
    bits = coder.vote_fractions(np.ascontiguousarray(rgb)) > 0.5
    found = decode_payload(bits, key)
    if found is None:
        return None
    watermark_id, corrected = found
    bit_errors = int(np.count_nonzero(encode_payload(watermark_id, key) != bits))
    return watermark_id, corrected, bit_errors


def detect(rgb: np.ndarray, key: MarkKey, *, factors: tuple[float, ...] = RESCALE_FACTORS) -> Detection:
    """Look for a payload, first in the image as given, then in rescaled copies.

    A resized copy has lost the block grid it was marked on; scaling it back by the inverse of a
    common resize factor (0.5x, 2/3x, 3/4x) restores that grid closely enough to read the bits.
    A rescaled try whose image would exceed ``MAX_RESCALE_PIXELS`` is skipped (not counted in
    ``tries``): a large upload is read once, as given, in stripes.
    """
    height, width = rgb.shape[:2]
    tries = 0
    for factor in factors:
        if factor == 1.0:
            candidate = rgb
        else:
            size = (round(width * factor), round(height * factor))
            if size[0] * size[1] > MAX_RESCALE_PIXELS:
                continue
            candidate = rgb  # drop the previous rescaled copy before making the next one (memory)
            candidate = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
        if not can_mark(candidate.shape[1], candidate.shape[0]):
            continue
        tries += 1
        found = _decode_once(candidate, key)
        # Three corrected bytes is 7e-6 a try for an unmarked image: too likely to be chance. Such readings are
        # left to the fingerprint path, which confirms the mark against the original.
        if found is not None and found[1] <= MAX_BLIND_CORRECTIONS:
            watermark_id, corrected, bit_errors = found
            chance = min(1.0, tries * codeword_acceptance_probability(corrected))
            return Detection(True, watermark_id, corrected, bit_errors, factor, None, tries, chance, key.layout_version)
    if not can_mark(width, height) and width * height * max(factors) ** 2 < MIN_PIXELS:
        return Detection(False, reason="image too small to carry a watermark", tries=tries)
    return Detection(False, reason="no valid watermark payload found", tries=tries)


class Watermarker:
    """The watermark stage as one component: embed and detect with the service's mark key."""

    method = METHOD

    def __init__(
        self, key: MarkKey, *, factors: tuple[float, ...] = RESCALE_FACTORS, legacy: bool = False, luma: bool = True
    ) -> None:
        self.key = key
        self.factors = factors
        self.luma = luma  # False: new marks carry the chroma component only (the luminance one needs its reference)
        # (width, height) of every picture this watermarker marked: verify's blind read tries a rescaling only toward
        # the size of a marked record, and this instance's own are known without waiting for the database.
        self.marked_sizes: set[tuple[int, int]] = set()
        # Records certified before keyed layouts carry the library's layout: when any exist, a blind read that finds
        # nothing is tried once more with it (their false-positive chance is counted in ``tries``).
        self.legacy = legacy

    @classmethod
    def from_key_file(cls, path: Path) -> Watermarker:
        """A watermarker with the key in ``path`` (created on first use)."""
        return cls(MarkKey.load_or_create(path))

    def can_mark(self, width: int, height: int) -> bool:
        """Whether a picture of this size can carry the mark."""
        return can_mark(width, height)

    def embed(self, rgb: np.ndarray, watermark_id: int) -> np.ndarray:
        """The marked pixels only (``mark`` also returns the luminance reference the record must keep)."""
        return self.mark(rgb, watermark_id).rgb

    def mark(self, rgb: np.ndarray, watermark_id: int, *, luma: bool | None = None) -> MarkedPicture:
        """Mark with both components (or the chroma one alone: ``luma=False``, or the watermarker's default)."""
        marked = mark(rgb, watermark_id, self.key, luma=self.luma if luma is None else luma)
        self.marked_sizes.add((rgb.shape[1], rgb.shape[0]))
        return marked

    def detect(self, rgb: np.ndarray, *, factors: tuple[float, ...] | None = None) -> Detection:
        """Read the mark blind; ``factors``: the rescalings to try (default: the watermarker's)."""
        factors = factors or self.factors
        found = detect(rgb, self.key, factors=factors)
        if found.detected or not self.legacy:
            return found
        old = detect(rgb, self.key.legacy(), factors=factors)
        tries = found.tries + old.tries
        if not old.detected:
            return replace(found, tries=tries)
        chance = min(1.0, tries * codeword_acceptance_probability(old.corrected_errors))
        return replace(old, tries=tries, false_positive_probability=chance)


def u_plane(rgb: np.ndarray) -> np.ndarray:
    """The U channel of OpenCV's ``COLOR_RGB2YUV`` in float64, without its rounding to uint8.

    Reading an aligned or photometrically corrected copy works on float pixels; rounding U to
    integers first would add up to 0.5 of noise per pixel for nothing.
    """
    pixels = rgb.astype(np.float64)
    luma = 0.299 * pixels[..., 0] + 0.587 * pixels[..., 1] + 0.114 * pixels[..., 2]
    return (pixels[..., 2] - luma) * 0.492 + 128.0


@dataclass(frozen=True)
class SoftVotes:
    """Per payload bit: what the blocks that were read say about it.

    ``score_sums[i]`` adds one soft vote in [-1, 1] per block carrying bit ``i`` (+1: the block's
    largest singular value sits exactly on a "1" level, -1: exactly on a "0" level, 0: halfway, no
    information); ``counts[i]`` is the number of such blocks and ``ones[i]`` the fraction of them
    whose hard vote (the decoder's rule) is 1.
    """

    score_sums: np.ndarray
    counts: np.ndarray
    ones: np.ndarray

    @property
    def blocks(self) -> int:
        """Blocks that voted, over all payload bits."""
        return int(self.counts.sum())


def masked_soft_votes(u: np.ndarray, pixel_mask: np.ndarray | None = None, *, layout: MarkLayout) -> SoftVotes:
    """Soft-read the payload from a U plane on the marked image's own block grid.

    ``u`` (float, HxW) must be in the frame of the image as it was marked (after alignment), so
    block ``k`` in reading order still carries the bit and lattice offset ``layout`` gives it
    (``MarkKey.layout``; ``MarkLayout.stock()`` reads the library's layout). Only 4x4 blocks of the
    Haar approximation band (8x8 pixels) lying wholly inside ``pixel_mask`` vote: a block that is
    partly outside what the upload covers, or straddles its border, reads garbage.

    The soft vote is ``-sin(2 pi phase)`` with ``phase = ((s0 - d_k) mod q) / q``: the embedder puts ``s0``
    at phase 0.25 for a 0 and 0.75 for a 1, so this is -1 / +1 there, falls smoothly to 0 at the
    decision boundaries (0 and 0.5) where a small distortion flips the hard vote, and has the same
    sign as the hard vote of ``vote_fractions``.
    """
    step = SCALES[1]
    height, width = u.shape[:2]
    rows4, cols4 = height // 4 * 4, width // 4 * 4
    plane = u[:rows4, :cols4]
    ca1 = (plane[0::2, 0::2] + plane[1::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 1::2]) / 2
    rows, cols = ca1.shape[0] // BLOCK, ca1.shape[1] // BLOCK
    blocks = ca1[: rows * BLOCK, : cols * BLOCK].reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2)
    blocks = blocks.reshape(-1, BLOCK, BLOCK)
    index, dither = layout.of_blocks(0, rows * cols)
    if pixel_mask is not None:
        side = 2 * BLOCK  # one approximation-band block covers 8x8 pixels
        inside = pixel_mask[: rows * side, : cols * side].reshape(rows, side, cols, side).all(axis=(1, 3)).ravel()
        blocks, index, dither = blocks[inside], index[inside], dither[inside]
    phase = ((largest_singular_values(blocks) - dither * step) % step) / step
    scores = -np.sin(2 * np.pi * phase)
    counts = np.bincount(index, minlength=PAYLOAD_BITS)
    sums = np.bincount(index, weights=scores, minlength=PAYLOAD_BITS)
    ones = np.bincount(index, weights=(phase > 0.5).astype(np.float64), minlength=PAYLOAD_BITS)
    return SoftVotes(sums, counts, ones / np.maximum(counts, 1))
