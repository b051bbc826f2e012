"""Align an upload to a candidate original: the geometry and light of a modified copy.

A fact-checker's copy of a certified image is often cropped, mirrored, slightly rotated, resized,
re-encoded or brightened. The fingerprint index proposes candidate originals; this module fits the
transform that maps the upload onto a candidate (ORB features, ratio test, a RANSAC similarity:
scale, rotation, translation, and the same on the mirrored upload; a full affine fit for a stretched
copy; a homography for a keystoned or off-axis copy, only as an upgrade of a fit that already passed),
warps the upload into the original's frame and fits the brightness/contrast change. In that frame
the watermark's block grid is the original's again, which is what lets ``provenance.marks.confirm`` read
the mark after a crop at any offset, a flip, a rotation or a keystone; and the two images can be
compared pixel by pixel to show what was edited (``difference_png``) and to describe the changes
(``describe_changes``). Smooth pictures (a retina scan, a microscope slide, a heavily denoised copy:
few ORB corners at the default FAST threshold) are described again with a lower threshold.

Measured on the robustness benchmark's photos (scikit-image, 512 and 1024 px, crops at random
offsets), every copy under JPEG 30-50, WebP 75, crop 75%, contrast, resize + JPEG + brightness,
median 3/5, sharpening, gamma 0.7/1.4, hue 20 degrees, black and white, strong denoising, rotation
by 10 degrees (black corners or cropped inside) and a 5% keystone aligns to within a pixel or two;
no pair of unrelated scikit-image pictures (2,100 ordered pairs, plain, cropped and resized) aligns.

Alignment is evidence of similar content only, never of identity: two photos of the same scene
align too. Only a confirmed mark makes a candidate the record. Nothing here looks at the mark, so
the geometry and the light it fits cannot bias the confirmation toward any payload.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Feature detection runs on a copy whose longest side is at most this: ORB at 512 px costs ~6 ms,
# and the transform is composed back to full resolution, where RANSAC's fit is refined on all inliers.
DETECT_SIDE = 512
# A small upload (a 0.5x copy of a crop) is enlarged to this for detection: ORB ignores a 31 px
# border and needs a few pyramid levels, so below ~300 px it finds too few features.
MIN_DETECT_SIDE = 320
ORB_FEATURES = 1000
# A tight crop (at most this share of the original's pixels) that does not align is tried once more against the
# original described densely (``dense_features``): crops keeping 10% of a 1024-pixel photo aligned 8/24 before, 22/24
# after (scikit-image photos, random offsets). Only failures pay for it, and only small uploads.
TIGHT_CROP_SHARE = 0.35
DENSE_SIDE = 1024
DENSE_FEATURES = 5000
# ORB's FAST corners need a grey-level step of 20 by default: a smooth picture (a retina scan, a microscope slide,
# a motion-blurred or heavily denoised copy) yields under a hundred corners at 512 px, too few to match after a
# crop. Such a picture is described again with this threshold (only when the first pass finds under half of
# ORB_FEATURES: a detailed photo keeps its strongest corners either way and pays nothing).
SENSITIVE_FAST_THRESHOLD = 5
RATIO = 0.8  # Lowe's ratio test on Hamming distances
RANSAC_THRESHOLD = 3.0  # reprojection error in original pixels at detection scale
# Unrelated pairs of scikit-image photos (all 1,104 ordered pairs, plain and cropped) reach at most
# 8 inliers once the scale is plausible; real copies, even 0.5x resizes of crops, have 40+.
MIN_INLIERS = 15
MIN_SCALE, MAX_SCALE = 0.2, 5.0
# The unflipped fit is trusted without trying the mirror when it is this clear; otherwise both are
# tried and the one with more inliers wins (a near-symmetric scene can half-match its mirror image).
CLEAR_INLIERS, CLEAR_RATIO = 100, 0.6
AFFINE_MAX_ANISOTROPY = 2.0  # a stretched copy: at most one side resized twice as much as the other
# A perspective fit (a keystone correction, a photo of a screen or print taken slightly off-axis) replaces the
# similarity only when it brings clearly more matches within a quarter of the RANSAC threshold (a similarity copy
# gains nothing there; a 5% keystone brings 1.6-2.5 times as many), and only as an upgrade of a fit that already
# passed: a homography's eight parameters are never what makes an unrelated pair align.
PERSPECTIVE_GAIN, PERSPECTIVE_MARGIN = 1.25, 8
# Across the upload's corners the local scale (area) may vary at most this much: a 5% keystone varies by ~1.1,
# a 20% one by ~1.5; more is a degenerate fit, not a copy.
PERSPECTIVE_MAX_AREA_RATIO = 1.6
PHOTOMETRIC_CELL = 4  # the brightness/contrast fit compares means over cells of this many pixels a side
EROSION_PX = 3  # pixels dropped along the covered area's edge, where interpolation mixes in the fill
FILL_TOLERANCE = 6  # colour tolerance of a rotation's constant fill (black corners), JPEG noise included
DIFFERENCE_SIGMA = 2.0  # both images are blurred this much before comparing: re-encoding and resampling
DIFFERENCE_THRESHOLD = 32.0  # noise stays far below it (JPEG 50 or blur radius 1: < 1% of pixels over it)
MIN_REGION_PX = 25  # differing specks smaller than a 5x5 square are noise, not an edit
REFINE_GRID = 3  # 3x3 patches for the sub-pixel refinement
REFINE_GRID_PERSPECTIVE = 4  # 4x4 for a perspective fit, whose correction is a homography too (8 parameters)


@dataclass(frozen=True)
class Photometric:
    """How the upload's light differs: upload luminance ~= ``gain`` x original luminance + ``offset``.

    ``brightness`` is the relative change of mean luminance over the covered area, ``contrast`` the
    relative change of contrast (standard deviation over mean): a brightness slider (all values
    times 1.2) reads brightness +20%, contrast 0; a contrast slider (values pushed away from the mean
    by 1.2) reads brightness 0, contrast +20%.
    """

    gain: float = 1.0
    offset: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    # How far colours moved from grey: upload (V - 128) ~= chroma_gain x original (V - 128), V being the
    # red-difference channel, which carries no mark. A brightness or contrast slider scales chroma as it scales
    # luminance; a saturation slider scales chroma alone. The mark is read from U, which moves with V.
    chroma_gain: float = 1.0


@dataclass(frozen=True, eq=False)
class Alignment:
    """Where an upload sits on a candidate original.

    ``matrix`` (2x3) maps upload pixel coordinates to original pixel coordinates (pixel centres at
    integers, as OpenCV). The upload is modelled as the original mirrored (if ``flipped``), rotated
    ``rotation_deg`` counter-clockwise as seen on screen, scaled by ``scale`` (upload pixels per
    original pixel) and cropped to ``crop_box`` (x0, y0, x1, y1: the original's pixels it covers,
    end exclusive). ``aligned`` is the upload warped into the original's frame (original's size,
    uint8 RGB) and ``mask`` the pixels it covers, eroded by a few pixels and without a rotation's
    constant-colour fill corners. ``changed`` marks covered pixels that still differ from the
    original once geometry and light are undone (edits), ``difference`` the per-pixel difference.
    ``homography`` (3x3, upload -> original) is set when a perspective fit was chosen (a keystoned
    copy): ``aligned`` and ``mask`` come from it, and ``matrix`` is then its closest affine map
    (least squares over the upload's frame), good to a few pixels, from which ``scale``,
    ``rotation_deg`` and the boxes mapped by other modules are read.
    """

    matrix: np.ndarray
    flipped: bool
    scale: float
    rotation_deg: float
    crop_box: tuple[int, int, int, int]
    coverage: float
    inliers: int
    matches: int
    aligned: np.ndarray
    mask: np.ndarray
    photometric: Photometric
    difference: np.ndarray = field(repr=False)
    changed: np.ndarray = field(repr=False)
    homography: np.ndarray | None = field(default=None, repr=False)

    @property
    def changed_fraction(self) -> float:
        """Share of the covered area that differs from the original after alignment."""
        covered = int(self.mask.sum())
        return float(self.changed.sum()) / covered if covered else 0.0


@dataclass(eq=False)
class Features:
    """ORB keypoints (full-resolution coordinates) and descriptors of one image, reusable.

    An upload checked against several candidates is described once; its mirror image is described
    only when a candidate needs it, then kept.
    """

    gray: np.ndarray  # the detection-scale grey image
    sx: float  # detection pixels per full-resolution pixel, horizontally
    sy: float
    width: int  # full resolution
    height: int
    points: np.ndarray
    descriptors: np.ndarray | None
    _mirrored: Features | None = None

    def mirrored(self) -> Features:
        if self._mirrored is None:
            gray = np.ascontiguousarray(self.gray[:, ::-1])
            self._mirrored = _describe(gray, self.sx, self.sy, self.width, self.height)
        return self._mirrored


_orb = cv2.ORB.create(nfeatures=ORB_FEATURES)
_orb_sensitive = cv2.ORB.create(nfeatures=ORB_FEATURES, fastThreshold=SENSITIVE_FAST_THRESHOLD)
_orb_dense = cv2.ORB.create(nfeatures=DENSE_FEATURES)
_matcher = cv2.BFMatcher(cv2.NORM_HAMMING)


def _describe(gray: np.ndarray, sx: float, sy: float, width: int, height: int) -> Features:
    keypoints, descriptors = _orb.detectAndCompute(gray, None)
    if len(keypoints) < ORB_FEATURES // 2:
        more, more_descriptors = _orb_sensitive.detectAndCompute(gray, None)
        if len(more) > len(keypoints):
            keypoints, descriptors = more, more_descriptors
    points = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    # Detection pixel centres to full-resolution pixel centres (resizing maps pixel edges to edges).
    points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5
    points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5
    return Features(gray, sx, sy, width, height, points, descriptors)


def features(rgb: np.ndarray) -> Features:
    """Describe an image for ``align`` (detection on a copy resized to 320-512 px on its longest side)."""
    height, width = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    longest = max(width, height)
    factor = min(DETECT_SIDE / longest, max(1.0, MIN_DETECT_SIDE / longest))
    if factor != 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, size, interpolation=interpolation)
    return _describe(gray, gray.shape[1] / width, gray.shape[0] / height, width, height)


@dataclass(frozen=True)
class _Fit:
    transform: np.ndarray  # 3x3, upload (as described, maybe mirrored) -> original; last row 0 0 1 unless perspective
    inliers: int
    matches: int
    perspective: bool = False


def _is_affine(transform: np.ndarray) -> bool:
    return bool(transform[2, 0] == 0 and transform[2, 1] == 0 and transform[2, 2] == 1)


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (n, 2) points through a 3x3 transform (affine or perspective)."""
    mapped = points @ transform[:2, :2].T + transform[:2, 2]
    if _is_affine(transform):
        return np.asarray(mapped)
    return np.asarray(mapped / (points @ transform[2, :2] + transform[2, 2])[:, None])


def _warp(image: np.ndarray, transform: np.ndarray, size: tuple[int, int], flags: int) -> np.ndarray:
    if _is_affine(transform):
        return cv2.warpAffine(image, transform[:2], size, flags=flags)
    return cv2.warpPerspective(image, transform, size, flags=flags)


def _affine_part(transform: np.ndarray, width: int, height: int) -> np.ndarray:
    """The 2x3 affine map closest (least squares over the upload's frame) to a 3x3 transform."""
    if _is_affine(transform):
        return np.array(transform[:2], dtype=np.float64)
    xs, ys = np.meshgrid(np.linspace(-0.5, width - 0.5, 7), np.linspace(-0.5, height - 0.5, 7))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    design = np.hstack([points, np.ones((len(points), 1))])
    solution, *_ = np.linalg.lstsq(design, _apply(transform, points), rcond=None)
    return np.asarray(solution.T, dtype=np.float64)


def _perspective(
    src: np.ndarray, dst: np.ndarray, matrix: np.ndarray, threshold: float, width: int, height: int
) -> tuple[np.ndarray, int] | None:
    """A homography that explains clearly more matches than ``matrix`` (2x3) does, and is plausible; else None."""
    homography, flags = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, threshold, maxIters=2000, confidence=0.999)
    if homography is None or flags is None or not np.isfinite(homography).all():
        return None
    homography = homography / homography[2, 2]
    tight = threshold / 4
    close_h = int((np.linalg.norm(_apply(homography, src) - dst, axis=1) < tight).sum())
    close_a = int((np.linalg.norm(src @ matrix[:, :2].T + matrix[:, 2] - dst, axis=1) < tight).sum())
    if close_h < PERSPECTIVE_GAIN * close_a + PERSPECTIVE_MARGIN:
        return None
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    depth = corners @ homography[2, :2] + homography[2, 2]
    if (depth <= 0).any():  # the horizon crosses the upload: not a view of a flat picture
        return None
    mapped = _apply(homography, corners)
    areas = []
    for point, (x, y), w in zip(corners, mapped, depth, strict=True):
        del point
        jacobian = (homography[:2, :2] - np.outer([x, y], homography[2, :2])) / w
        singular = np.linalg.svd(jacobian, compute_uv=False)
        if singular[1] <= 0 or singular[0] / singular[1] > AFFINE_MAX_ANISOTROPY:
            return None
        areas.append(singular[0] * singular[1])
    if max(areas) / min(areas) > PERSPECTIVE_MAX_AREA_RATIO:
        return None
    return homography, int(flags.ravel().astype(bool).sum())


def _fit(upload: Features, original: Features) -> _Fit | None:
    """Ratio-tested one-to-one matches, then a RANSAC similarity; None when implausible."""
    if upload.descriptors is None or original.descriptors is None:
        return None
    if len(upload.descriptors) < 2 or len(original.descriptors) < 2:
        return None
    best: dict[int, cv2.DMatch] = {}
    for pair in _matcher.knnMatch(upload.descriptors, original.descriptors, k=2):
        if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance:
            match = pair[0]
            # One upload point per original point: many-to-one matches (a textureless original
            # where every descriptor lands on the same few keypoints) make degenerate fits.
            if match.trainIdx not in best or match.distance < best[match.trainIdx].distance:
                best[match.trainIdx] = match
    if len(best) < MIN_INLIERS:
        return None
    matches = list(best.values())
    src = upload.points[[m.queryIdx for m in matches]]
    dst = original.points[[m.trainIdx for m in matches]]
    threshold = RANSAC_THRESHOLD / min(original.sx, original.sy)
    matrix, inlier_flags = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=2000, confidence=0.999, refineIters=10
    )
    if matrix is None or inlier_flags is None:
        return None
    inliers = inlier_flags.ravel().astype(bool)
    count = int(inliers.sum())
    if count < CLEAR_RATIO * len(matches):
        # Few matches fit a similarity: perhaps the copy was stretched (width and height resized by different
        # factors, as a platform that forces an aspect ratio does). A full affine fit takes over only when it
        # explains clearly more matches; its scales must stay within AFFINE_MAX_ANISOTROPY of each other.
        affine, affine_flags = cv2.estimateAffine2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=2000, confidence=0.999,
            refineIters=10,
        )  # fmt: skip
        if affine is not None and affine_flags is not None:
            affine_inliers = affine_flags.ravel().astype(bool)
            singular = np.linalg.svd(affine[:, :2], compute_uv=False)
            plausible = singular[1] > 0 and singular[0] / singular[1] <= AFFINE_MAX_ANISOTROPY
            if plausible and affine_inliers.sum() >= max(MIN_INLIERS, 1.25 * count):
                matrix, inliers, count = affine, affine_inliers, int(affine_inliers.sum())
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if count < MIN_INLIERS or scale == 0 or not MIN_SCALE <= 1 / scale <= MAX_SCALE:
        return None
    # Inliers stacked on a handful of spots fit anything: require them spread over distinct points.
    distinct = min(len(np.unique(np.round(src[inliers]), axis=0)), len(np.unique(np.round(dst[inliers]), axis=0)))
    if distinct < MIN_INLIERS:
        return None
    perspective = _perspective(src, dst, matrix, threshold, upload.width, upload.height)
    if perspective is not None:
        return _Fit(perspective[0], perspective[1], len(matches), perspective=True)
    return _Fit(np.vstack([matrix, [0.0, 0.0, 1.0]]), count, len(matches))


def _fill_mask(upload: np.ndarray, original: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Upload pixels that are a rotation's constant fill (e.g. black corners), as a uint8 0/255 mask.

    A constant-colour region touching an image corner is taken as fill only when the original, at the
    same place, is on average a different colour: a uniform sky or backdrop stays covered. Deciding
    per region on its mean colour keeps the mark (a few levels of U per block) out of the decision.
    """
    height, width = upload.shape[:2]
    if not upload.flags.writeable:  # OpenCV wants a writable image even when it fills only the mask
        upload = upload.copy()
    fill = np.zeros((height, width), np.uint8)
    flood = np.zeros((height + 2, width + 2), np.uint8)
    tolerance = (FILL_TOLERANCE,) * 3
    for x, y in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1)):
        if flood[y + 1, x + 1]:
            continue
        region = np.zeros_like(flood)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
        cv2.floodFill(upload, region, (x, y), (0, 0, 0), tolerance, tolerance, flags)
        flood |= region
        inside = region[1:-1, 1:-1] > 0
        if inside.sum() < MIN_REGION_PX:
            continue
        ys, xs = np.nonzero(inside)
        colour = upload[ys, xs].mean(axis=0)
        # Where the region lands on the original: a sample of its pixels is enough for a mean colour.
        pick = slice(None, None, max(1, len(xs) // 2000))
        mapped = np.stack([xs[pick], ys[pick]], axis=1) @ matrix[:, :2].T + matrix[:, 2]
        cols, rows = np.rint(mapped[:, 0]).astype(int), np.rint(mapped[:, 1]).astype(int)
        on = (cols >= 0) & (cols < original.shape[1]) & (rows >= 0) & (rows < original.shape[0])
        under = original[rows[on], cols[on]]
        if len(under) and np.abs(under.mean(axis=0) - colour).max() > 40:
            fill[inside] = 255
    return fill


def _cell_means(plane: np.ndarray, cell: int = PHOTOMETRIC_CELL) -> np.ndarray:
    """Means over ``cell`` x ``cell`` pixel cells (the ragged edge dropped).

    OpenCV's area resize by a whole factor is exactly the cell mean (same values as a NumPy reshape and mean,
    twenty times faster: at 1024x1024 the NumPy form cost most of an alignment).
    """
    rows, cols = plane.shape[0] // cell, plane.shape[1] // cell
    return cv2.resize(plane[: rows * cell, : cols * cell], (cols, rows), interpolation=cv2.INTER_AREA)


def fit_photometric(aligned: np.ndarray, original: np.ndarray, mask: np.ndarray) -> Photometric:
    """Least-squares gain/offset from original to upload luminance on the covered area.

    Luminance carries no mark (it lives in U), so the fit cannot lean toward any payload. The fit
    compares means over 4x4-pixel cells, not pixels: a resized, blurred or re-encoded copy has lost
    the original's fine detail, and regressing smoothed pixels on sharp ones shrinks the gain (a
    +10% brightness on a detailed image read as -7% with an offset of +20); cell means are what both
    images still share. Cells holding a clipped pixel (0-2, 253-255 in ANY channel of either image:
    a saturated red keeps a mid-grey luminance while its red sits at 255) do not follow the model and
    are left out; a second pass drops the worst residuals (edited regions).
    """
    grey_a = cv2.cvtColor(aligned, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_o = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Every channel in 3-252 in both images (inRange is one pass; NumPy's all() over the channel axis was slow).
    low, high = (3, 3, 3), (252, 252, 252)
    unclipped = (cv2.inRange(aligned, low, high) > 0) & (cv2.inRange(original, low, high) > 0)
    cells_a, cells_o = _cell_means(grey_a), _cell_means(grey_o)
    use = _cell_means((unclipped & mask).astype(np.float32)) == 1.0
    x, y = cells_o[use].astype(np.float64), cells_a[use].astype(np.float64)
    if len(x) < 100 or x.std() < 2.0:
        return Photometric()
    gain, offset = 1.0, 0.0
    for _ in range(2):
        var = x.var()
        gain = float(((x - x.mean()) * (y - y.mean())).mean() / var) if var > 0 else 1.0
        offset = float(y.mean() - gain * x.mean())
        residual = np.abs(y - (gain * x + offset))
        keep = residual <= max(3.0 * float(np.median(residual)), 1.0)
        if keep.sum() < 100:
            break
        x, y = x[keep], y[keep]
    chroma = _chroma_gain(aligned, original, use)
    if not 0.25 <= gain <= 4.0:  # not a brightness/contrast change: leave the light alone
        return Photometric(chroma_gain=chroma if chroma is not None else 1.0)
    chroma_gain = chroma if chroma is not None else gain
    mean_o = float(grey_o[mask].mean())
    mean_a = gain * mean_o + offset
    if mean_o <= 0 or mean_a <= 0:
        return Photometric(gain, offset, chroma_gain=chroma_gain)
    return Photometric(gain, offset, mean_a / mean_o - 1.0, gain * mean_o / mean_a - 1.0, chroma_gain)


def _chroma_gain(aligned: np.ndarray, original: np.ndarray, cells: np.ndarray) -> float | None:
    """The factor by which colours moved away from grey, fitted on V (no mark) over unclipped cells.

    A least-squares fit through V = 128 (an equal offset on R, G and B cancels in V), then a second pass
    without the worst residuals. None when the picture has too little colour to tell (then the luminance
    gain stands in: brightness and contrast move both alike).
    """
    v_a = _cell_means(_v_plane(aligned))[cells].astype(np.float64) - 128.0
    v_o = _cell_means(_v_plane(original))[cells].astype(np.float64) - 128.0
    for _ in range(2):
        energy = float(np.dot(v_o, v_o))
        if len(v_o) < 100 or energy < 100 * 4.0**2:  # about 100 cells 4 levels away from grey
            return None
        gain = float(np.dot(v_o, v_a)) / energy
        residual = np.abs(v_a - gain * v_o)
        keep = residual <= max(3.0 * float(np.median(residual)), 1.0)
        v_a, v_o = v_a[keep], v_o[keep]
    return gain if 0.25 <= gain <= 4.0 else None


def _v_plane(rgb: np.ndarray) -> np.ndarray:
    """V (red difference) of OpenCV's ``COLOR_RGB2YUV``, in float32 and unrounded."""
    # 0.877 x (R - luma), luma = 0.299 R + 0.587 G + 0.114 B, as one per-pixel linear map (a single pass).
    weights = np.array([[0.877 * 0.701, -0.877 * 0.587, -0.877 * 0.114, 128.0]], np.float32)
    return cv2.transform(rgb.astype(np.float32), weights)


def _difference(aligned: np.ndarray, original: np.ndarray, mask: np.ndarray, light: Photometric) -> np.ndarray:
    """Per-pixel colour difference (max over channels) between the upload and the original in its light and colour.

    The original is put in the upload's light (gain, offset, then clipped to 0-255 as the upload's
    editor did), rather than the upload in the original's: clipped highlights of a brightened copy
    then match instead of lighting up. Both are compared blurred, at half resolution (4x cheaper,
    and the map is coarse anyway), then the map is brought back to full size.
    """
    height, width = original.shape[:2]
    half = (max(1, width // 2), max(1, height // 2))
    ours = cv2.resize(aligned, half, interpolation=cv2.INTER_AREA).astype(np.float32)
    theirs = cv2.resize(original, half, interpolation=cv2.INTER_AREA).astype(np.float32)
    # Luminance by the gain and offset, colour (distance from grey) by the chroma gain: a contrast or
    # brightness change scales both alike, a saturation change only the colour.
    luma = (theirs @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    theirs = luma * np.float32(light.gain) + np.float32(light.offset) + (theirs - luma) * np.float32(light.chroma_gain)
    theirs = np.clip(theirs, 0, 255)
    sigma = DIFFERENCE_SIGMA / 2
    delta = np.abs(cv2.GaussianBlur(ours, (0, 0), sigma) - cv2.GaussianBlur(theirs, (0, 0), sigma))
    worst = np.maximum(np.maximum(delta[:, :, 0], delta[:, :, 1]), delta[:, :, 2])
    difference = cv2.resize(worst, (width, height), interpolation=cv2.INTER_LINEAR)
    difference[~mask] = 0
    return difference


def _changed(difference: np.ndarray) -> np.ndarray:
    over = (difference > DIFFERENCE_THRESHOLD).astype(np.uint8)
    # Opening removes thin lines along strong edges (a residual sub-pixel misfit), keeps areas.
    opened = cv2.morphologyEx(over, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return opened.astype(bool)


def _rotation_and_scale(matrix: np.ndarray, flipped: bool) -> tuple[float, float]:
    """Rotation (degrees, counter-clockwise on screen) and scale of the upload w.r.t. the original."""
    to_upload = cv2.invertAffineTransform(matrix)[:, :2]
    if flipped:
        to_upload = to_upload @ np.diag([-1.0, 1.0])  # take the mirror out first: upload = R(S(F(original)))
    scale = math.sqrt(abs(float(np.linalg.det(to_upload))))
    # With y pointing down, an on-screen counter-clockwise turn by t is [[cos t, sin t], [-sin t, cos t]].
    rotation = math.degrees(math.atan2(float(to_upload[0, 1]), float(to_upload[0, 0])))
    return rotation, scale


def _refine(upload: np.ndarray, original: np.ndarray, transform: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Sharpen the feature fit to ~0.1 px with phase correlation of patches; None to keep it.

    ORB keypoints come from pyramid levels, so the RANSAC fit can be off by a pixel at the far
    edges of the image (0.3% of scale), which is an eighth of a mark block: enough to cost the mark
    reading one or two orders of magnitude in p-value after a resize and JPEG. Each patch of the
    warped upload is phase-correlated with the original (luminance only: the mark is in U), and a
    similarity fitted to the patch shifts corrects the transform (~5 ms at 512x512). ``transform`` is
    3x3 (affine or perspective); so is the result.
    """
    height, width = original.shape[:2]
    ys, xs = np.nonzero(mask[::4, ::4])
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min() * 4, xs.max() * 4, ys.min() * 4, ys.max() * 4
    side = 128 if min(x1 - x0, y1 - y0) >= 192 else 64
    if min(x1 - x0, y1 - y0) < side:
        return None
    grey_o = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_u = cv2.cvtColor(upload, cv2.COLOR_RGB2GRAY)
    grey_a = _warp(grey_u, transform, (width, height), cv2.INTER_LINEAR).astype(np.float32)
    window = cv2.createHanningWindow((side, side), cv2.CV_32F)
    centres, targets = [], []
    grid = REFINE_GRID if _is_affine(transform) else REFINE_GRID_PERSPECTIVE
    for cy in np.linspace(y0 + side / 2, y1 - side / 2, grid):
        for cx in np.linspace(x0 + side / 2, x1 - side / 2, grid):
            r0, c0 = int(cy - side / 2), int(cx - side / 2)
            if r0 < 0 or c0 < 0 or r0 + side > height or c0 + side > width:
                continue
            if not mask[r0 : r0 + side, c0 : c0 + side].all():
                continue
            patch_o, patch_a = grey_o[r0 : r0 + side, c0 : c0 + side], grey_a[r0 : r0 + side, c0 : c0 + side]
            (dx, dy), response = cv2.phaseCorrelate(patch_o, patch_a, window)
            if response < 0.1 or abs(dx) > 3 or abs(dy) > 3:  # flat or ambiguous patch
                continue
            centre = np.array([c0 + (side - 1) / 2, r0 + (side - 1) / 2])
            centres.append(centre)  # the warped upload shows here what the original shows at centre - shift
            targets.append(centre - (dx, dy))
    if len(centres) < 3:
        return None
    if not _is_affine(transform) and len(centres) >= 8:
        # ORB's keypoints (detection scale, pyramid levels) leave a perspective fit off by a pixel or two at the
        # corners in ways a similarity cannot take out; with 8+ patch shifts a homography correction can.
        homography, _ = cv2.findHomography(np.array(centres), np.array(targets), cv2.LMEDS)
        if homography is None or not np.isfinite(homography).all():
            return None
        frame = np.array([[0.0, 0.0], [width - 1.0, 0.0], [0.0, height - 1.0], [width - 1.0, height - 1.0]])
        if np.abs(_apply(homography, frame) - frame).max() > 4:
            return None
        return np.asarray(homography @ transform)
    correction, _ = cv2.estimateAffinePartial2D(np.array(centres), np.array(targets), method=cv2.LMEDS)
    if correction is None:
        return None
    # A refinement, not a new fit: anything beyond a pixel or two and a fraction of a degree is an outlier.
    scale = math.sqrt(abs(float(np.linalg.det(correction[:, :2]))))
    angle = abs(math.degrees(math.atan2(float(correction[1, 0]), float(correction[0, 0]))))
    shift = np.abs(correction[:, :2] @ [width / 2, height / 2] + correction[:, 2] - [width / 2, height / 2]).max()
    if abs(scale - 1) > 0.01 or angle > 0.5 or shift > 3:
        return None
    return np.asarray(np.vstack([correction, [0, 0, 1]]) @ transform)


def dense_features(rgb: np.ndarray) -> Features:
    """Many more features, spread over the whole picture: what a tight crop needs on the original's side.

    ``features`` keeps the 1000 strongest corners of a 512-pixel copy; a crop keeping a tenth of the
    picture holds only a handful of them (and at 1024 pixels, at half its own scale). Here the original is
    described at up to 1024 pixels with ``DENSE_FEATURES`` corners.
    """
    height, width = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    factor = min(1.0, DENSE_SIDE / max(width, height))
    if factor != 1.0:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    keypoints, descriptors = _orb_dense.detectAndCompute(gray, None)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2)
    sx, sy = gray.shape[1] / width, gray.shape[0] / height
    points[:, 0] = (points[:, 0] + 0.5) / sx - 0.5
    points[:, 1] = (points[:, 1] + 0.5) / sy - 0.5
    return Features(gray, sx, sy, width, height, points, descriptors)


def _best_fit(ups: Features, orig: Features) -> tuple[_Fit | None, bool]:
    """The fit of the upload, or of its mirror image when that is clearly better; and whether it is the mirror."""
    best, flipped = _fit(ups, orig), False
    if best is None or best.inliers < CLEAR_INLIERS or best.inliers < CLEAR_RATIO * best.matches:
        mirrored = _fit(ups.mirrored(), orig)
        if mirrored is not None and (best is None or mirrored.inliers > best.inliers):
            best, flipped = mirrored, True
    return best, flipped


def align(
    upload_rgb: np.ndarray,
    original_rgb: np.ndarray,
    *,
    upload_features: Features | None = None,
    original_features: Features | None = None,
) -> Alignment | None:
    """Fit and apply the similarity (plus optional mirror; affine or perspective when clearly better) from the
    upload onto the original.

    Returns None when the images do not align: too few consistent matches, or a scale outside
    0.2-5x. Pass ``upload_features`` / ``original_features`` (from ``features``) to describe an
    image once for several comparisons.
    """
    upload_rgb = np.ascontiguousarray(upload_rgb)
    original_rgb = np.ascontiguousarray(original_rgb)
    ups = upload_features or features(upload_rgb)
    orig = original_features or features(original_rgb)
    best, flipped = _best_fit(ups, orig)
    original_pixels = original_rgb.shape[0] * original_rgb.shape[1]
    if best is None and upload_rgb.shape[0] * upload_rgb.shape[1] <= TIGHT_CROP_SHARE * original_pixels:
        best, flipped = _best_fit(ups, dense_features(original_rgb))
    if best is None:
        return None
    height, width = upload_rgb.shape[:2]
    transform = best.transform.astype(np.float64)  # 3x3; matrix below is its affine part (the transform if affine)
    if flipped:  # the fit maps the mirrored upload; compose the mirror x -> width - 1 - x
        transform = transform @ np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    matrix = _affine_part(transform, width, height)
    out_h, out_w = original_rgb.shape[:2]
    rough_rotation, scale = _rotation_and_scale(matrix, flipped)
    erosion = EROSION_PX + math.ceil(1.0 / min(scale, 1.0))  # an enlarged upload pixel smears further
    kernel = np.ones((2 * erosion + 1,) * 2, np.uint8)
    valid = np.full((height, width), 255, np.uint8)
    if abs(rough_rotation) > 0.2 or best.perspective:  # a rotation or a keystone leaves constant-colour fill
        valid -= _fill_mask(upload_rgb, original_rgb, matrix)

    def covered_by(transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        covered = _warp(valid, transform, (out_w, out_h), cv2.INTER_NEAREST) > 0
        return covered, cv2.erode(covered.astype(np.uint8), kernel) > 0

    covered, mask = covered_by(transform)
    if not mask.any():
        return None
    refined = _refine(upload_rgb, original_rgb, transform, mask)
    if refined is not None:
        transform = refined
        matrix = _affine_part(transform, width, height)
        covered, mask = covered_by(transform)
    rotation, scale = _rotation_and_scale(matrix, flipped)

    source, warp_transform = upload_rgb, transform
    if scale > 1.5:  # shrink a large upload first: a bilinear warp alone would alias
        factor = 1.0 / scale
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        source = cv2.resize(upload_rgb, size, interpolation=cv2.INTER_AREA)
        fx, fy = size[0] / width, size[1] / height
        to_small = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        warp_transform = transform @ np.linalg.inv(to_small)
    # Bicubic: the mark is read from 8x8-pixel block statistics that bilinear interpolation of an enlarged
    # copy blurs (on detailed images it halved the evidence of a 0.75x JPEG copy).
    aligned = _warp(source, warp_transform, (out_w, out_h), cv2.INTER_CUBIC)

    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = _apply(transform, corners) + 0.5  # pixel edges of the original
    x0, y0 = (max(0, min(n, round(v))) for v, n in zip(mapped.min(axis=0), (out_w, out_h), strict=True))
    x1, y1 = (max(0, min(n, round(v))) for v, n in zip(mapped.max(axis=0), (out_w, out_h), strict=True))

    light = fit_photometric(aligned, original_rgb, mask)
    difference = _difference(aligned, original_rgb, mask, light)
    return Alignment(
        matrix=matrix,
        flipped=flipped,
        scale=scale,
        rotation_deg=rotation,
        crop_box=(int(x0), int(y0), int(x1), int(y1)),
        coverage=float(covered.mean()),
        inliers=best.inliers,
        matches=best.matches,
        aligned=aligned,
        mask=mask,
        photometric=light,
        difference=difference,
        changed=_changed(difference),
        homography=None if _is_affine(transform) else transform,
    )


def direct_alignment(upload_rgb: np.ndarray, original_rgb: np.ndarray) -> Alignment | None:
    """The upload as the whole original, only resized: no feature search.

    This is the geometry a blind mark reading implies (a mark is read blind only on the original's
    block grid, possibly rescaled), and it works on pictures where features are scarce (flat or
    noise-like generated images). None when the aspect ratios differ by more than 1%.
    """
    height, width = upload_rgb.shape[:2]
    out_h, out_w = original_rgb.shape[:2]
    if abs((width / height) / (out_w / out_h) - 1.0) > 0.01:
        return None
    sx, sy = out_w / width, out_h / height
    matrix = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    if (width, height) == (out_w, out_h):
        aligned = np.ascontiguousarray(upload_rgb)
    else:
        interpolation = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
        aligned = cv2.resize(np.ascontiguousarray(upload_rgb), (out_w, out_h), interpolation=interpolation)
    mask = np.ones((out_h, out_w), bool)
    light = fit_photometric(aligned, original_rgb, mask)
    difference = _difference(aligned, original_rgb, mask, light)
    return Alignment(
        matrix=matrix,
        flipped=False,
        scale=1.0 / math.sqrt(sx * sy),
        rotation_deg=0.0,
        crop_box=(0, 0, out_w, out_h),
        coverage=1.0,
        inliers=0,
        matches=0,
        aligned=aligned,
        mask=mask,
        photometric=light,
        difference=difference,
        changed=_changed(difference),
    )


def describe_changes(
    alignment: Alignment,
    upload_format: str,
    original_format: str,
    upload_size: tuple[int, int],
    original_size: tuple[int, int],
) -> list[str]:
    """Human-readable list of what was done to the original to make the upload.

    Sizes are (width, height); formats as ``media.sniff_format`` names them (png, jpeg, webp).
    Small deviations (under 2% scale, 0.5 degree, 3% light, 97% coverage) are fitting noise and
    are not reported.
    """
    changes: list[str] = []
    if alignment.flipped:
        changes.append("mirrored horizontally")
    if abs(alignment.rotation_deg) >= 0.5:
        direction = "counter-clockwise" if alignment.rotation_deg > 0 else "clockwise"
        changes.append(f"rotated {abs(alignment.rotation_deg):.1f}° {direction}")
    to_upload = cv2.invertAffineTransform(alignment.matrix)[:, :2]
    scale_x, scale_y = (float(np.hypot(*to_upload[:, i])) for i in (0, 1))  # how far each original axis stretched
    if abs(scale_x / scale_y - 1.0) >= 0.02:
        changes.append(f"stretched: width x{scale_x:.2f}, height x{scale_y:.2f} (aspect ratio changed)")
    elif abs(alignment.scale - 1.0) >= 0.02:
        changes.append(f"resized to {alignment.scale:.2f}x")
    light = alignment.photometric
    x0, y0, x1, y1 = alignment.crop_box
    box_share = (x1 - x0) * (y1 - y0) / float(original_size[0] * original_size[1])
    if box_share < 0.97:
        changes.append(f"cropped to ({x0},{y0})-({x1},{y1}), {alignment.coverage:.0%} of the area")
    elif alignment.coverage < 0.97:  # a rotation inside the same frame loses the corners
        changes.append(f"covers {alignment.coverage:.0%} of the original (corners cut off)")
    if tuple(upload_size) != tuple(original_size):
        changes.append(f"dimensions {original_size[0]}x{original_size[1]} -> {upload_size[0]}x{upload_size[1]} pixels")
    if abs(light.brightness) >= 0.03:
        changes.append(f"brightness {light.brightness:+.0%}")
    if abs(light.contrast) >= 0.03:
        changes.append(f"contrast {light.contrast:+.0%}")
    saturation = light.chroma_gain / light.gain - 1.0 if light.gain > 0 else 0.0
    if abs(saturation) >= 0.05:
        changes.append(f"saturation {saturation:+.0%}")
    if alignment.changed_fraction >= 0.001:
        changes.append(f"edited: {alignment.changed_fraction:.1%} of the covered area differs from the original")
    if upload_format.lower() != original_format.lower():
        changes.append(f"re-encoded as {upload_format.upper()} (original: {original_format.upper()})")
    elif not changes:
        changes.append(f"re-encoded as {upload_format.upper()}: same pixels layout, different bytes")
    return changes


def difference_png(alignment: Alignment, original_rgb: np.ndarray) -> bytes:
    """A PNG of the original's frame showing where the aligned upload differs.

    The original is shown dimmed in grey; pixels the upload changed are red (brighter for larger
    differences); what the upload does not cover is hatched. The original is compared in the upload's
    light (``Photometric``), so a brightness or contrast change alone leaves the picture grey.
    """
    # One float32 plane per step (no HxWx3 float temporaries, no int64 coordinate grids) and fast PNG compression:
    # this runs on every modified verdict, and a 1024x1024 image took ~110 ms the straightforward way.
    grey = cv2.cvtColor(original_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    height, width = grey.shape
    diagonal = np.add.outer(np.arange(height, dtype=np.int32), np.arange(width, dtype=np.int32)) // 6
    hatch = np.where(diagonal % 2 == 0, np.float32(150.0), np.float32(90.0))
    base = np.where(alignment.mask, grey * np.float32(0.45) + np.float32(40.0), hatch)
    strength = np.clip((alignment.difference - DIFFERENCE_THRESHOLD / 2) / (2 * DIFFERENCE_THRESHOLD), 0.0, 1.0)
    alpha = np.where(alignment.changed, 0.6 + 0.4 * strength, 0.0).astype(np.float32)
    kept = base * (1.0 - alpha)
    red, other = kept + np.float32(255.0) * alpha, kept + np.float32(32.0) * alpha
    bgr = cv2.merge([np.clip(c, 0, 255).astype(np.uint8) for c in (other, other, red)])
    ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV fails only on impossible shapes
        raise ValueError("the difference image could not be encoded")
    return buffer.tobytes()
