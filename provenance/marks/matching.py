"""Matching an upload to a candidate original: ORB features, ratio-tested matches and a RANSAC fit.

The fit is a similarity (scale, rotation, translation), tried on the mirrored upload too; a full affine
fit for a stretched copy; a homography for a keystoned or off-axis copy, only as an upgrade of a fit that
already passed. ``provenance.marks.align`` turns the fit into an ``Alignment``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        """The same image mirrored left-right, described on first use and kept."""
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
class Fit:
    """A plausible fit of the upload onto the original: the transform and how many matches it explains."""

    transform: np.ndarray  # 3x3, upload (as described, maybe mirrored) -> original; last row 0 0 1 unless perspective
    inliers: int
    matches: int
    perspective: bool = False


def is_affine(transform: np.ndarray) -> bool:
    """Whether a 3x3 transform is affine (last row 0 0 1)."""
    return bool(transform[2, 0] == 0 and transform[2, 1] == 0 and transform[2, 2] == 1)


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (n, 2) points through a 3x3 transform (affine or perspective)."""
    mapped = points @ transform[:2, :2].T + transform[:2, 2]
    if is_affine(transform):
        return np.asarray(mapped)
    return np.asarray(mapped / (points @ transform[2, :2] + transform[2, 2])[:, None])


def warp(image: np.ndarray, transform: np.ndarray, size: tuple[int, int], flags: int) -> np.ndarray:
    """Warp an image through a 3x3 transform (affine or perspective) onto ``size`` (width, height)."""
    if is_affine(transform):
        return cv2.warpAffine(image, transform[:2], size, flags=flags)
    return cv2.warpPerspective(image, transform, size, flags=flags)


def affine_part(transform: np.ndarray, width: int, height: int) -> np.ndarray:
    """The 2x3 affine map closest (least squares over the upload's frame) to a 3x3 transform."""
    if is_affine(transform):
        return np.array(transform[:2], dtype=np.float64)
    xs, ys = np.meshgrid(np.linspace(-0.5, width - 0.5, 7), np.linspace(-0.5, height - 0.5, 7))
    points = np.stack([xs.ravel(), ys.ravel()], axis=1)
    design = np.hstack([points, np.ones((len(points), 1))])
    solution, *_ = np.linalg.lstsq(design, apply_transform(transform, points), rcond=None)
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
    close_h = int((np.linalg.norm(apply_transform(homography, src) - dst, axis=1) < tight).sum())
    close_a = int((np.linalg.norm(src @ matrix[:, :2].T + matrix[:, 2] - dst, axis=1) < tight).sum())
    if close_h < PERSPECTIVE_GAIN * close_a + PERSPECTIVE_MARGIN:
        return None
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    depth = corners @ homography[2, :2] + homography[2, 2]
    if (depth <= 0).any():  # the horizon crosses the upload: not a view of a flat picture
        return None
    mapped = apply_transform(homography, corners)
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


def _fit(upload: Features, original: Features) -> Fit | None:
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
        return Fit(perspective[0], perspective[1], len(matches), perspective=True)
    return Fit(np.vstack([matrix, [0.0, 0.0, 1.0]]), count, len(matches))


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


def best_fit(ups: Features, orig: Features) -> tuple[Fit | None, bool]:
    """The fit of the upload, or of its mirror image when that is clearly better; and whether it is the mirror."""
    best, flipped = _fit(ups, orig), False
    if best is None or best.inliers < CLEAR_INLIERS or best.inliers < CLEAR_RATIO * best.matches:
        mirrored = _fit(ups.mirrored(), orig)
        if mirrored is not None and (best is None or mirrored.inliers > best.inliers):
            best, flipped = mirrored, True
    return best, flipped
