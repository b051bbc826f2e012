"""The fingerprint codes: the ISCC image code of the whole image and of patches around scale-space blobs.

How the codes are chosen, what they survive and what they cost is told in ``provenance.marks.fingerprint``;
``Fingerprinter`` computes them for a certified image (``compute``) and for an upload to look up (``query``).
The index that searches them is ``provenance.marks.fingerprint_index``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import iscc_lib
import numpy as np
from PIL import Image

ALG = "io.iscc.v0"  # C2PA soft-binding algorithm list name of the ISCC image code
# Layout of a stored row; a new detector or patch size gets a new name. /2 adds 32 fine patch codes to
# /1's codes (the same iscc and kp codes, computed the same way), so queries find rows of both.
SCHEME = "iscc64+kp16+kpf32/2"
SCHEME_V1 = "iscc64+kp16/1"
SCHEMES = (SCHEME_V1, SCHEME)  # what the index loads
KIND_ISCC = "iscc"  # the whole image, as the ISCC spec prepares it
KIND_MIRROR = "iscc-mirror"  # the whole image mirrored left-right (query only: catches flips)
KIND_KEYPOINT = "kp"  # a patch around a scale-space blob
KIND_FINE = "kp-fine"  # a patch around a small blob, spread over the picture (finds tight crops)
KINDS = (KIND_ISCC, KIND_MIRROR, KIND_KEYPOINT, KIND_FINE)  # append only: stored rows hold indexes
MAX_DISTANCE = 8  # Hamming threshold (of 64 bits) for a candidate; see the module docstring

WORK_SIZE = 160  # longest side of the gray working copy the blobs are found in
PATCH_RADIUS = 5.0  # patch half-side, in units of the blob's scale
SIGMA0 = 1.6  # scale of the first DoG level (SIFT's value), in working-copy pixels
LEVELS = 3  # DoG levels per octave
CONTRAST = 0.5  # minimum |DoG| (gray levels) of a blob: drops noise, keeps faint photos
EDGE_RATIO = 10.0  # SIFT's edge test: blobs on straight edges slide along them, so they are dropped


# --- the ISCC image code ---------------------------------------------------------------------
# ISCC's DCT is the unnormalised DCT-II (Nayuki's fast algorithm); only the relative order of the
# coefficients matters, so one matrix product gives the same bits (tests check against iscc-lib).
_N = 32
_DCT8 = np.cos(np.pi / _N * (np.arange(_N)[None, :] + 0.5) * np.arange(8)[:, None])  # (8, 32)
_BIT_WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)


def image_code_bits(pixels: np.ndarray) -> np.ndarray:
    """The 64-bit ISCC image-code digests of a batch of 32x32 gray thumbnails, as unsigned ints.

    ``pixels``: (n, 32, 32) gray values. Bit 63 is the DC coefficient (row-major over the 8x8
    block), exactly the digest ``iscc_lib.gen_image_code_v0`` puts after the ISCC header.
    """
    thumbs = np.asarray(pixels, dtype=np.float64).reshape(-1, _N, _N)
    coefficients = (_DCT8 @ thumbs @ _DCT8.T).reshape(len(thumbs), 64)
    bits = coefficients > np.median(coefficients, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _BIT_WEIGHTS).sum(axis=1, dtype=np.uint64)


def iscc_image_code(thumbnail: np.ndarray) -> tuple[str, int]:
    """The ISCC image code of a prepared 32x32 gray thumbnail: (``ISCC:...`` string, 64-bit digest)."""
    iscc = str(iscc_lib.gen_image_code_v0(np.ascontiguousarray(thumbnail, dtype=np.uint8).tobytes())["iscc"])
    return iscc, int.from_bytes(iscc_lib.iscc_decode(iscc)[4], "big")


def iscc_thumbnail(rgb: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The 32x32 gray pixels the ISCC image code is computed from, prepared as the spec says."""
    gray, box = _prepare(rgb, alpha)
    return _thumbnail(gray, box)


def _prepare(rgb: np.ndarray, alpha: np.ndarray | None) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Pillow "L" gray of the image on white, and the box left after trimming its uniform border.

    The ISCC preparation (iscc-sdk's ``image_normalize``): white behind transparency, uniform border
    (the top-left pixel's colour) trimmed, gray, 32x32 bicubic. EXIF orientation is the decoder's
    business: pixels arrive upright. The gray image is shared with the keypoint detector.
    """
    rgb = _flatten_alpha(rgb, alpha)
    return Image.fromarray(np.ascontiguousarray(rgb)).convert("L"), _trim_box(rgb)


def _thumbnail(gray: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    # Cropped first: resize(box=...) would let the filter reach pixels outside the box.
    if box != (0, 0, *gray.size):
        gray = gray.crop(box)
    return np.asarray(gray.resize((_N, _N), Image.Resampling.BICUBIC))


def _trim_box(rgb: np.ndarray, block: int = 16) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of what is left when the border of exactly the top-left pixel's colour goes.

    Scans in from each side a few lines at a time: a photo differs on its first line, so this costs
    a few hundred pixels instead of a comparison of the whole image.
    """
    corner = rgb[0, 0]

    def first_differing(lines: np.ndarray) -> int | None:
        for start in range(0, len(lines), block):
            differs = np.flatnonzero((lines[start : start + block] != corner).any(axis=(1, 2)))
            if len(differs):
                return start + int(differs[0])
        return None

    height, width = rgb.shape[:2]
    top = first_differing(rgb)
    if top is None:  # one colour: nothing to trim to
        return 0, 0, width, height
    bottom = height - (first_differing(rgb[::-1]) or 0)
    columns = rgb[top:bottom].swapaxes(0, 1)
    left = first_differing(columns) or 0
    right = width - (first_differing(columns[::-1]) or 0)
    return left, top, right, bottom


def code_to_iscc(code: int) -> str:
    """The ``ISCC:...`` string of a 64-bit image-code digest."""
    return "ISCC:" + str(iscc_lib.encode_component(2, 1, 0, 64, code.to_bytes(8, "big")))


# --- blobs and their patches -------------------------------------------------------------------
@dataclass(frozen=True)
class Keypoint:
    """A scale-space blob, in the image's pixels (pixel centres at +0.5); ``scale`` is its sigma."""

    x: float
    y: float
    scale: float
    response: float


def _halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    return image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32)


def _octaves(work: np.ndarray) -> Iterable[tuple[int, np.ndarray, np.ndarray]]:
    """Gaussian scale space, halving until patches no longer fit.

    Yields (octave, the (LEVELS + 3, h, w) stack, a sharper copy to sample patches from). Patches
    come from an image blurred by about a quarter of the blob scale: the code reads only the lowest
    8x8 frequencies of a 32x32 patch, and the scale-space levels themselves are blurred several times
    more than that, which washes the patches out (measured: fewer matches, more random ones).
    """
    k = 2.0 ** (1.0 / LEVELS)
    sigmas = [SIGMA0 * k**i for i in range(LEVELS + 3)]
    steps = [math.sqrt(sigmas[i] ** 2 - sigmas[i - 1] ** 2) for i in range(1, LEVELS + 3)]
    base = cv2.GaussianBlur(work, (0, 0), math.sqrt(SIGMA0**2 - 0.25), borderType=cv2.BORDER_REFLECT)
    sharp = work
    octave = 0
    # The smallest blob of an octave needs a patch of 2 * PATCH_RADIUS * SIGMA0 pixels.
    while min(base.shape) >= 2 * PATCH_RADIUS * SIGMA0 * k:
        levels = [base]
        for step in steps:
            levels.append(cv2.GaussianBlur(levels[-1], (0, 0), step, borderType=cv2.BORDER_REFLECT))
        yield octave, np.stack(levels), sharp
        # Level LEVELS has twice the base scale: decimated, it is the next octave's base.
        base = _halve(levels[LEVELS])
        sharp = _halve(levels[0])
        octave += 1


def _extrema(gauss: np.ndarray) -> tuple[np.ndarray, ...]:
    """Refined DoG extrema of one octave: (x, y, sigma, response, level) in octave pixels, centres at +0.5."""
    dog = gauss[1:] - gauss[:-1]
    mag = np.abs(dog)
    kernel = np.ones((3, 3), np.uint8)
    local = np.stack([cv2.dilate(level, kernel) for level in mag])
    around = np.maximum(np.maximum(local[:-2], local[1:-1]), local[2:])
    lv, ys, xs = np.nonzero((mag[1:-1] >= around) & (mag[1:-1] > CONTRAST))
    lv += 1
    h, w = dog.shape[1:]
    inner = (ys > 0) & (xs > 0) & (ys < h - 1) & (xs < w - 1)
    lv, ys, xs = lv[inner], ys[inner], xs[inner]
    d = dog
    centre = d[lv, ys, xs]
    dxx = d[lv, ys, xs + 1] + d[lv, ys, xs - 1] - 2 * centre
    dyy = d[lv, ys + 1, xs] + d[lv, ys - 1, xs] - 2 * centre
    dxy = (d[lv, ys + 1, xs + 1] - d[lv, ys + 1, xs - 1] - d[lv, ys - 1, xs + 1] + d[lv, ys - 1, xs - 1]) / 4
    det = dxx * dyy - dxy**2
    trace = dxx + dyy
    blob = (det > 0) & (trace**2 * EDGE_RATIO < (EDGE_RATIO + 1) ** 2 * det)
    lv, ys, xs, centre = lv[blob], ys[blob], xs[blob], centre[blob]
    dxx, dyy, dxy, det = dxx[blob], dyy[blob], dxy[blob], det[blob]
    # One Newton step for the sub-pixel position and the scale (cross terms with scale dropped).
    gx = (d[lv, ys, xs + 1] - d[lv, ys, xs - 1]) / 2
    gy = (d[lv, ys + 1, xs] - d[lv, ys - 1, xs]) / 2
    gs = (d[lv + 1, ys, xs] - d[lv - 1, ys, xs]) / 2
    dss = d[lv + 1, ys, xs] + d[lv - 1, ys, xs] - 2 * centre
    ox = -(dyy * gx - dxy * gy) / det
    oy = -(dxx * gy - dxy * gx) / det
    os_ = np.divide(-gs, dss, out=np.zeros_like(gs), where=dss != 0)
    stable = (np.abs(ox) < 1) & (np.abs(oy) < 1) & (np.abs(os_) < 1)
    x = xs + np.clip(ox, -0.5, 0.5) + 0.5
    y = ys + np.clip(oy, -0.5, 0.5) + 0.5
    sigma = SIGMA0 * 2.0 ** ((lv + np.clip(os_, -0.5, 0.5)) / LEVELS)
    return x[stable], y[stable], sigma[stable], np.abs(centre[stable]), lv[stable]


def _working_copy(gray: np.ndarray, work_size: int = WORK_SIZE) -> np.ndarray:
    """Float32 copy of a gray image with its longest side ``work_size`` (area-averaged down, linear up)."""
    h, w = gray.shape
    f = work_size / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(gray, size, interpolation=interpolation).astype(np.float32)


_Blob = tuple[float, float, float, float, int, float, float]  # response, x, y, sigma (work px), octave, octave x, y


def keypoint_patches(
    gray: np.ndarray,
    count: int,
    *,
    work_size: int = WORK_SIZE,
    angles: Sequence[float] = (0.0,),
    max_octave: int | None = None,
    per_cell: int | None = None,
) -> tuple[list[Keypoint], np.ndarray]:
    """The ``count`` strongest blobs whose patch lies inside a gray image, and their patches.

    Patches are (len(angles) * n, 32, 32), angle-major: for each angle (degrees, counter-clockwise
    as the picture is seen) the n blobs' patches sampled on a grid rotated by it, so an upload
    rotated by that angle gives the original's upright patch. ``work_size`` is the working copy's
    longest side; ``max_octave`` keeps the finest octaves only; ``per_cell`` keeps at most that many
    blobs in each cell of a 4x4 grid, so that small patches cover the whole picture (any tight crop
    then holds some) instead of crowding its busiest part.
    """
    work = _working_copy(gray, work_size)
    found: list[_Blob] = []
    patches_by_octave: dict[int, np.ndarray] = {}
    for octave, gauss, sharp in _octaves(work):
        if max_octave is not None and octave > max_octave:
            break
        x, y, sigma, response, _ = _extrema(gauss)
        radius = PATCH_RADIUS * sigma
        h, w = gauss.shape[1:]
        inside = (x - radius >= 0) & (y - radius >= 0) & (x + radius <= w) & (y + radius <= h)
        scale = 2.0**octave
        for i in np.flatnonzero(inside):
            found.append((float(response[i]), x[i] * scale, y[i] * scale, sigma[i] * scale, octave, x[i], y[i]))
        patches_by_octave[octave] = sharp
    found.sort(key=lambda f: -f[0])
    kept: list[_Blob] = []
    in_cell: dict[tuple[int, int], int] = {}
    cell_w, cell_h = work.shape[1] / 4, work.shape[0] / 4
    for cand in found:
        # The same blob can be found in two octaves; keep the stronger copy.
        if any(
            (cand[1] - k[1]) ** 2 + (cand[2] - k[2]) ** 2 < (0.5 * max(cand[3], k[3])) ** 2
            and abs(math.log(cand[3] / k[3])) < 0.35
            for k in kept
        ):
            continue
        if per_cell is not None:
            cell = (int(cand[1] // cell_w), int(cand[2] // cell_h))
            if in_cell.get(cell, 0) >= per_cell:
                continue
            in_cell[cell] = in_cell.get(cell, 0) + 1
        kept.append(cand)
        if len(kept) == count:
            break
    patches = _sample_patches(kept, patches_by_octave, angles)
    # Reported in the image's own pixels (what an aligner needs), not the working copy's.
    sx, sy = gray.shape[1] / work.shape[1], gray.shape[0] / work.shape[0]
    keypoints = [Keypoint(k[1] * sx, k[2] * sy, k[3] * sx, k[0]) for k in kept]
    return keypoints, patches


def _sample_patches(kept: list[_Blob], sources: dict[int, np.ndarray], angles: Sequence[float]) -> np.ndarray:
    """(len(angles) * n, 32, 32) patches of the kept blobs, one remap per octave for all blobs and angles."""
    n, a = len(kept), len(angles)
    patches = np.empty((a, n, _N, _N), np.float32)
    grid = (np.arange(_N, dtype=np.float32) + 0.5) / _N * 2.0 - 1.0  # patch sample offsets in [-1, 1]
    gx, gy = np.broadcast_to(grid[None, :], (_N, _N)), np.broadcast_to(grid[:, None], (_N, _N))
    # Image rows grow downwards: a picture turned counter-clockwise by t maps an upright offset (u, v)
    # to (u cos t + v sin t, -u sin t + v cos t) in pixels.
    radians = np.radians(np.asarray(angles, np.float32))
    cos, sin = np.cos(radians)[:, None, None, None], np.sin(radians)[:, None, None, None]
    off_x = (gx * cos + gy * sin).astype(np.float32)  # (a, 1, 32, 32)
    off_y = (-gx * sin + gy * cos).astype(np.float32)
    for octave, source in sources.items():
        rows = [i for i, k in enumerate(kept) if k[4] == octave]
        if not rows:
            continue
        ox = np.array([kept[i][5] for i in rows], np.float32)[None, :, None, None]
        oy = np.array([kept[i][6] for i in rows], np.float32)[None, :, None, None]
        half = (np.array([kept[i][3] for i in rows], np.float32) / 2.0**octave * PATCH_RADIUS)[None, :, None, None]
        # One remap for all patches of this octave: maps stacked vertically, (a*n*32, 32).
        map_x = ox + half * off_x - 0.5
        map_y = oy + half * off_y - 0.5
        sampled = cv2.remap(
            source,
            map_x.reshape(-1, _N),
            map_y.reshape(-1, _N),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        patches[:, rows] = sampled.reshape(a, len(rows), _N, _N)
    return patches.reshape(a * n, _N, _N)


# --- fingerprints ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fingerprint:
    """One indexed code: its kind (``iscc``, ``iscc-mirror``, ``kp``) and its 64 bits, unsigned."""

    kind: str
    code: int


@dataclass(frozen=True)
class ImageFingerprints:
    """The fingerprints of one image.

    ``iscc`` is the ``io.iscc.v0`` soft-binding value of the whole image. ``entries`` are the codes
    to index (certification: ``iscc`` first, then ``kp``) or to look up (query: plus ``iscc-mirror``).
    """

    iscc: str
    entries: tuple[Fingerprint, ...]
    scheme: str = SCHEME
    keypoints: tuple[Keypoint, ...] = field(default=(), compare=False, repr=False)

    @property
    def codes(self) -> np.ndarray:
        """The entries' 64-bit codes, as unsigned ints."""
        return np.array([e.code for e in self.entries], dtype=np.uint64)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The entries' kinds, in order."""
        return tuple(e.kind for e in self.entries)

    def packed(self) -> bytes:
        """The stored form: the kinds' indexes in ``KINDS`` (one byte each), then the codes (8 bytes, big-endian)."""
        kinds = bytes(KINDS.index(e.kind) for e in self.entries)
        return kinds + self.codes.astype(">u8").tobytes()

    @classmethod
    def from_packed(cls, iscc: str, data: bytes, scheme: str = SCHEME) -> ImageFingerprints:
        """The fingerprints of a stored row (the inverse of ``packed``)."""
        n = len(data) // 9
        kinds = data[:n]
        codes = np.frombuffer(data[n:], dtype=">u8")
        return cls(iscc, tuple(Fingerprint(KINDS[k], int(c)) for k, c in zip(kinds, codes, strict=True)), scheme)

    def soft_binding(self) -> dict[str, Any]:
        """The C2PA ``c2pa.soft-binding`` assertion data for the whole-image ISCC code."""
        return {"alg": ALG, "blocks": [{"scope": {}, "value": self.iscc}]}


class Fingerprinter:
    """The fingerprint stage as one component: ``compute`` at certification, ``query`` at lookup."""

    alg = ALG
    scheme = SCHEME

    def __init__(
        self,
        *,
        keypoints: int = 16,
        query_keypoints: int = 24,
        mirror_keypoints: bool = False,
        query_angles: Sequence[float] = (0.0, -10.0, 10.0),
        fine_keypoints: int = 32,
        fine_work_size: int = 480,
        fine_max_octave: int = 1,
        fine_per_cell: int = 2,
        second_look_work_sizes: Sequence[int] = (226, 320),
    ) -> None:
        # 16 stored patches: recall on 50% crops 0.93 (12: 0.88, 24: 0.94) for 17 entries per record.
        self.keypoints = keypoints
        # The query can afford more patches than the record stores: a crop's strongest blobs need not
        # be the original's strongest, and queries cost no storage.
        self.query_keypoints = query_keypoints
        # Mirrored patches would find flipped crops, at the price of twice the random matches.
        self.mirror_keypoints = mirror_keypoints
        # Upright patches match copies turned up to about 6 degrees; +-10 extends that to about 16
        # (rotation 10: proposed 0.25-0.50 -> 1.00, fingerprint_bench --recall).
        self.query_angles = tuple(query_angles)
        # Small blobs of a 480-pixel working copy (its two finest octaves), at most 2 per cell of a
        # 4x4 grid: a crop keeping 10% of the picture holds a few of them (proposed 0.23 -> 0.88 at
        # 1024; 16 codes: 0.80; a 320-pixel copy: 0.79 but 25% crops 0.98 against 0.94).
        self.fine_keypoints = fine_keypoints
        self.fine_work_size = fine_work_size
        self.fine_max_octave = fine_max_octave
        self.fine_per_cell = fine_per_cell
        # A tight crop at its original scale shows the stored fine blobs (a 480-pixel copy of the whole picture)
        # at 480 x (crop side / picture side) pixels: 240-340 for crops keeping 25-50% of the area, whatever the
        # picture's size. The upright 160-pixel query finds most of them through the scale space, but on
        # noise-like pictures (many blobs of equal strength) its strongest blobs are not the stored ones. The
        # second look samples the upload at the working sizes between the coarse and the fine scale (a
        # factor of about sqrt 2 apart), only when the first proposed nothing.
        self.second_look_work_sizes = tuple(second_look_work_sizes)

    def compute(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> ImageFingerprints:
        """Fingerprints to store with a certified image: its ISCC code, its patch codes and its fine patch codes."""
        gray, box = _prepare(rgb, alpha)
        iscc, code = iscc_image_code(_thumbnail(gray, box))
        keypoints, patches = keypoint_patches(np.asarray(gray), self.keypoints)
        entries = [Fingerprint(KIND_ISCC, code)]
        entries += [Fingerprint(KIND_KEYPOINT, int(c)) for c in image_code_bits(patches)]
        if self.fine_keypoints:
            fine, fine_patches = keypoint_patches(
                np.asarray(gray),
                self.fine_keypoints,
                work_size=self.fine_work_size,
                max_octave=self.fine_max_octave,
                per_cell=self.fine_per_cell,
            )
            entries += [Fingerprint(KIND_FINE, int(c)) for c in image_code_bits(fine_patches)]
            keypoints += fine
        scheme = SCHEME if self.fine_keypoints else SCHEME_V1
        return ImageFingerprints(iscc, tuple(entries), scheme, keypoints=tuple(keypoints))

    def query(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> ImageFingerprints:
        """Fingerprints to look an upload up with: its ISCC code, its mirror's, and more patch codes.

        The patch codes are the upright ones (the only kind ``iscc64+kp16/1`` rows can match) and the
        same patches sampled turned by each of ``query_angles``, so a copy rotated by about that much
        still gives the original's codes. They match stored ``kp`` and ``kp-fine`` codes alike: a
        tight crop, scaled up to the working size, shows the original's small blobs as large ones.
        """
        gray, box = _prepare(rgb, alpha)
        thumbnail = _thumbnail(gray, box)
        iscc, code = iscc_image_code(thumbnail)
        # Bicubic resampling is symmetric, so the mirrored thumbnail is the mirror's thumbnail.
        mirror = int(image_code_bits(thumbnail[None, :, ::-1])[0])
        keypoints, patches = keypoint_patches(np.asarray(gray), self.query_keypoints, angles=self.query_angles)
        entries = [Fingerprint(KIND_ISCC, code), Fingerprint(KIND_MIRROR, mirror)]
        entries += [Fingerprint(KIND_KEYPOINT, int(c)) for c in image_code_bits(patches)]
        if self.mirror_keypoints:
            upright = patches[: len(keypoints)]
            entries += [Fingerprint(KIND_KEYPOINT, int(c)) for c in image_code_bits(upright[:, :, ::-1])]
        return ImageFingerprints(iscc, tuple(entries), keypoints=tuple(keypoints))

    def second_look(self, rgb: np.ndarray, alpha: np.ndarray | None = None) -> ImageFingerprints:
        """Patch codes of the upload at ``second_look_work_sizes``, for a search whose first query proposed nothing.

        Upright and turned by ``query_angles``, like ``query``'s patches; no whole-image code (the first query
        had it). Empty entries when there are no second-look sizes.
        """
        gray, box = _prepare(rgb, alpha)
        iscc, _ = iscc_image_code(_thumbnail(gray, box))
        entries: list[Fingerprint] = []
        found: list[Keypoint] = []
        for work_size in self.second_look_work_sizes:
            keypoints, patches = keypoint_patches(
                np.asarray(gray), self.query_keypoints, work_size=work_size, angles=self.query_angles
            )
            entries += [Fingerprint(KIND_KEYPOINT, int(c)) for c in image_code_bits(patches)]
            found += keypoints
        return ImageFingerprints(iscc, tuple(entries), keypoints=tuple(found))


def _flatten_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None:
        return rgb
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)
