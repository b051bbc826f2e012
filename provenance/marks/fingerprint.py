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

``FingerprintIndex`` searches all entries by Hamming distance with multi-index hashing (Norouzi et
al.): each code is cut into 3 substrings of 22/21/21 interleaved bits; two codes within 8 bits agree
to within 2 bits on at least one substring (pigeonhole), so probing every key within 2 bits of each
query substring finds every entry within 8 bits, exactly. faiss' binary indexes were measured on the
same 17M codes and are much slower on one core (flat: ~300 ms per lookup of 26 codes; its multi-hash
index ~150 ms on 2M codes only), see ``fingerprint_bench``.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
        return np.array([e.code for e in self.entries], dtype=np.uint64)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(e.kind for e in self.entries)

    def packed(self) -> bytes:
        """The stored form: the kinds' indexes in ``KINDS`` (one byte each), then the codes (8 bytes, big-endian)."""
        kinds = bytes(KINDS.index(e.kind) for e in self.entries)
        return kinds + self.codes.astype(">u8").tobytes()

    @classmethod
    def from_packed(cls, iscc: str, data: bytes, scheme: str = SCHEME) -> ImageFingerprints:
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


def _flatten_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if alpha is None:
        return rgb
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


# --- the index ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A record whose fingerprints came within the threshold of the query's.

    ``matches`` counts the record's stored entries within the threshold, ``distance`` is the best
    of them (bits of 64) and ``matched_kind`` the kind of that best stored entry. Only a candidate:
    the caller confirms it (alignment, watermark) before it says anything about the upload.
    """

    record_id: str
    distance: int
    matched_kind: str
    matches: int


class FingerprintRows(Protocol):
    """What ``FingerprintIndex.sync`` needs from the repository (``RecordRepository`` has it)."""

    def fingerprints_since(self, cursor: int, limit: int) -> Sequence[tuple[int, str, str, bytes]]: ...


# Substrings of 22/21/21 bits, interleaved (bit p goes to table p % 3): neighbouring DCT coefficients
# are correlated (the DC bit is almost always 1), so contiguous substrings would crowd a few buckets.
_TABLES = 3
_TABLE_BITS = [list(range(t, 64, _TABLES)) for t in range(_TABLES)]


def _byte_luts(bits: list[int]) -> np.ndarray:
    """(8, 256) table: the substring bits that each value of each byte of a code contributes."""
    lut = np.zeros((8, 256), np.uint32)
    for j, p in enumerate(bits):
        byte, bit = divmod(p, 8)
        lut[byte, (np.arange(256) >> bit) & 1 == 1] |= np.uint32(1 << j)
    return lut


_LUTS = [_byte_luts(bits) for bits in _TABLE_BITS]


def _substrings(codes: np.ndarray, table: int) -> np.ndarray:
    as_bytes = codes.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    lut = _LUTS[table]
    key = lut[0][as_bytes[:, 0]]
    for b in range(1, 8):
        key |= lut[b][as_bytes[:, b]]
    return key


def _flip_masks(width: int, flips: int) -> np.ndarray:
    masks = [0]
    for n in range(1, flips + 1):
        masks += [sum(1 << i for i in combo) for combo in itertools.combinations(range(width), n)]
    return np.array(masks, np.uint32)


class _MultiIndexHash:
    """Exact Hamming range search over a fixed set of codes (entry ids 0..n-1).

    Per table: the codes sorted by their substring, the entry ids in that order, and where each
    substring value's run starts. A query reads one contiguous run per probe.
    """

    def __init__(self, codes: np.ndarray) -> None:
        self.size = len(codes)
        self.tables: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for t, bits in enumerate(_TABLE_BITS):
            keys = _substrings(codes, t)
            order = np.argsort(keys, kind="stable").astype(np.int32 if len(codes) < 2**31 else np.int64)
            starts = np.zeros((1 << len(bits)) + 1, np.int64)
            np.cumsum(np.bincount(keys, minlength=1 << len(bits)), out=starts[1:])
            self.tables.append((codes[order], order, starts))

    def search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, entry id, distance) of every entry within ``radius`` bits (duplicates possible)."""
        flips = radius // _TABLES  # pigeonhole: one substring is within this many bits
        found_q, found_e, found_d = [], [], []
        for t, (sorted_codes, order, starts) in enumerate(self.tables):
            probes = _substrings(queries, t)[:, None] ^ _masks(len(_TABLE_BITS[t]), flips)[None, :]
            begin, end = starts[probes], starts[probes + 1]
            lengths = (end - begin).ravel()
            total = int(lengths.sum())
            if total == 0:
                continue
            # Positions of all runs, concatenated: each run's start repeated, plus 0..len-1.
            offsets = np.cumsum(lengths) - lengths
            positions = np.repeat(begin.ravel() - offsets, lengths) + np.arange(total)
            query_of = np.repeat(np.repeat(np.arange(len(queries)), probes.shape[1]), lengths)
            distance = np.bitwise_count(sorted_codes[positions] ^ queries[query_of])
            hit = distance <= radius
            found_q.append(query_of[hit])
            found_e.append(order[positions[hit]])
            found_d.append(distance[hit])
        if not found_q:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        return np.concatenate(found_q), np.concatenate(found_e).astype(np.int64), np.concatenate(found_d)


_MASK_CACHE: dict[tuple[int, int], np.ndarray] = {}


def _masks(width: int, flips: int) -> np.ndarray:
    key = (width, flips)
    if key not in _MASK_CACHE:
        _MASK_CACHE[key] = _flip_masks(width, flips)
    return _MASK_CACHE[key]


class FingerprintIndex:
    """Records' fingerprints in memory, searched by Hamming distance; thread-safe.

    Entries live in append-only arrays. The oldest ones are covered by a multi-index hash (exact for
    any radius; probing cost grows with radius // 3); the newest (at most ``delta_limit``) are
    compared one by one, until a rebuild folds them in. Rebuilds run on a background thread while
    searches go on with the previous hash.

    ``sync(repository)`` loads the rows added since the last sync. Several service instances share
    one database, and a row's id is taken at insert but seen at commit, so a slow transaction can
    commit an id below one already seen: each sync reads again from ``lag`` ids back and skips the
    rows it already has.
    """

    def __init__(self, *, max_distance: int = MAX_DISTANCE, delta_limit: int = 16_384, lag: int = 1_000) -> None:
        self.max_distance = max_distance
        self.delta_limit = delta_limit
        self.lag = lag
        self._lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._codes = np.zeros(1024, np.uint64)
        self._owner = np.zeros(1024, np.int32)  # entry -> record number
        self._kind = np.zeros(1024, np.uint8)  # entry -> index in KINDS
        self._size = 0
        self._record_ids: list[str] = []
        self._hash: _MultiIndexHash | None = None
        self._rebuilding: threading.Thread | None = None
        self._cursor = 0  # highest row id synced
        self._seen_rows: set[int] = set()  # row ids within ``lag`` of the cursor that are loaded
        self._added_here: set[str] = set()  # records added by ``add`` that sync has not seen yet

    # --- writes ---------------------------------------------------------------------------------
    def add(self, record_id: str, fingerprints: ImageFingerprints) -> None:
        """Index a record's fingerprints (sync will not add them a second time)."""
        with self._lock:
            self._append(record_id, fingerprints.codes, [KINDS.index(k) for k in fingerprints.kinds])
            self._added_here.add(record_id)
        self._maybe_rebuild()

    def sync(self, repository: FingerprintRows, *, batch: int = 10_000) -> int:
        """Load the fingerprint rows added since the last sync; returns how many records were added.

        Reads the database without holding the index lock, so searches go on meanwhile; syncs run
        one at a time. Call it periodically (a background loop) rather than before every lookup.
        """
        added = 0
        with self._sync_lock:
            cursor = self._resume_from()
            while True:
                rows = repository.fingerprints_since(cursor, batch)
                fresh: list[tuple[str, bytes]] = []
                with self._lock:
                    for row_id, record_id, scheme, packed in rows:
                        if row_id in self._seen_rows:
                            continue
                        self._seen_rows.add(row_id)
                        if scheme not in SCHEMES:  # another detector's layout: needs a re-fingerprint
                            continue
                        if record_id in self._added_here:  # this instance indexed it when certifying
                            self._added_here.discard(record_id)
                            continue
                        fresh.append((record_id, packed))
                    self._append_packed(fresh)
                    if rows:
                        cursor = max(cursor, rows[-1][0])
                        self._cursor = max(self._cursor, cursor)
                added += len(fresh)
                if len(rows) < batch:
                    break
            with self._lock:
                floor = self._cursor - self.lag
                self._seen_rows = {r for r in self._seen_rows if r > floor}
        backlog = self._maybe_rebuild()
        if backlog is not None and self._size - (self._hash.size if self._hash else 0) > 8 * self.delta_limit:
            # A bulk load (first sync after start): searching that many unhashed entries one by one
            # would take seconds per lookup, so the caller waits for the hash instead.
            backlog.join()
        return added

    def _resume_from(self) -> int:
        """Where the next read starts: the cursor, or just below the oldest id in the lag window not seen.

        Ids are dense while nothing rolls back, so this is usually the cursor itself and a sync reads
        only new rows; a gap (a transaction still open, or rolled back) is read again until it falls
        ``lag`` ids behind.
        """
        with self._lock:
            cursor, seen = self._cursor, self._seen_rows
            for row_id in range(max(1, cursor - self.lag + 1), cursor + 1):
                if row_id not in seen:
                    return row_id - 1
            return cursor

    def _append_packed(self, rows: list[tuple[str, bytes]]) -> None:
        """Append many stored rows at once: bulk loads are dominated by per-row overhead otherwise."""
        if not rows:
            return
        counts = [len(packed) // 9 for _, packed in rows]
        kinds = np.frombuffer(b"".join(packed[:n] for (_, packed), n in zip(rows, counts, strict=True)), np.uint8)
        codes = np.frombuffer(b"".join(packed[n:] for (_, packed), n in zip(rows, counts, strict=True)), ">u8")
        owners = np.repeat(np.arange(len(self._record_ids), len(self._record_ids) + len(rows)), counts)
        self._reserve(len(codes))
        end = self._size + len(codes)
        self._codes[self._size : end] = codes
        self._owner[self._size : end] = owners
        self._kind[self._size : end] = kinds
        self._size = end
        self._record_ids.extend(record_id for record_id, _ in rows)

    def _reserve(self, n: int) -> None:
        if self._size + n > len(self._codes):
            capacity = max(2 * len(self._codes), self._size + n)
            # New arrays, not resized ones: a search may still hold the old ones.
            self._codes = _grown(self._codes, capacity)
            self._owner = _grown(self._owner, capacity)
            self._kind = _grown(self._kind, capacity)

    def _append(self, record_id: str, codes: np.ndarray, kinds: Sequence[int]) -> None:
        n = len(codes)
        self._reserve(n)
        self._codes[self._size : self._size + n] = codes
        self._owner[self._size : self._size + n] = len(self._record_ids)
        self._kind[self._size : self._size + n] = kinds
        self._size += n
        self._record_ids.append(record_id)

    def rebuild(self, *, wait: bool = True) -> None:
        """Fold every entry into the multi-index hash now (the benchmark and tests call it)."""
        self._maybe_rebuild(force=True)
        if wait:
            thread = self._rebuilding
            if thread is not None:
                thread.join()

    def _maybe_rebuild(self, force: bool = False) -> threading.Thread | None:
        """Start a rebuild when the unhashed entries exceed ``delta_limit``; returns the running one, if any."""
        with self._lock:
            covered = self._hash.size if self._hash else 0
            if self._rebuilding is not None or self._size == covered:
                return self._rebuilding
            if not force and self._size - covered <= self.delta_limit:
                return None
            codes = self._codes[: self._size]  # a view: entries below size never change
            thread = threading.Thread(target=self._build, args=(codes,), name="fingerprint-index", daemon=True)
            self._rebuilding = thread
        thread.start()
        return thread

    def _build(self, codes: np.ndarray) -> None:
        try:
            built = _MultiIndexHash(codes)
            with self._lock:
                self._hash = built
        finally:
            with self._lock:
                self._rebuilding = None

    # --- reads ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of records indexed."""
        return len(self._record_ids)

    @property
    def entries(self) -> int:
        return self._size

    @property
    def cursor(self) -> int:
        return self._cursor

    def search(
        self, query: ImageFingerprints | Sequence[Fingerprint], k: int = 8, max_distance: int | None = None
    ) -> list[Candidate]:
        """The ``k`` best records within ``max_distance`` bits of any query code.

        Ranked by how many of the record's stored entries matched, then by the best distance: one
        close code can be chance, several codes of one record matching the query's rarely are.
        """
        radius = self.max_distance if max_distance is None else max_distance
        entries = query.entries if isinstance(query, ImageFingerprints) else tuple(query)
        if not entries:
            return []
        queries = np.array([e.code for e in entries], dtype=np.uint64)
        with self._lock:  # a consistent snapshot; the arrays below it only grow
            hashed, size = self._hash, self._size
            codes, owner, kind, record_ids = self._codes, self._owner, self._kind, self._record_ids
            covered = hashed.size if hashed else 0
        found_e: list[np.ndarray] = []
        found_d: list[np.ndarray] = []
        if hashed is not None:
            _, e, d = hashed.search(queries, radius)
            found_e.append(e)
            found_d.append(d)
        if size > covered:  # the newest entries, one by one
            distance = np.bitwise_count(codes[covered:size][None, :] ^ queries[:, None])
            near = distance <= radius
            found_e.append(np.nonzero(near)[1] + covered)
            found_d.append(distance[near])
        if not found_e:
            return []
        entry = np.concatenate(found_e)
        dist = np.concatenate(found_d).astype(np.int64)
        if not len(entry):
            return []
        # Best distance per stored entry, then per record: matches and best distance.
        order = np.lexsort((dist, entry))
        entry, dist = entry[order], dist[order]
        first = np.ones(len(entry), bool)
        first[1:] = entry[1:] != entry[:-1]
        entry, dist = entry[first], dist[first]
        records = owner[entry]
        best: dict[int, tuple[int, int, int]] = {}  # record -> (matches, distance, kind)
        for r, d, kd in zip(records.tolist(), dist.tolist(), kind[entry].tolist(), strict=True):
            seen = best.get(r)
            if seen is None:
                best[r] = (1, d, kd)
            else:
                best[r] = (seen[0] + 1, d, kd) if d < seen[1] else (seen[0] + 1, seen[1], seen[2])
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[1][1], item[0]))[:k]
        return [Candidate(record_ids[r], d, KINDS[kd], n) for r, (n, d, kd) in ranked]


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros(capacity, array.dtype)
    grown[: len(array)] = array
    return grown


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
