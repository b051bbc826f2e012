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

import cv2
import numpy as np

# Alignment and the change description live in ``changes``, the matching in ``matching``; their names stay
# importable from here, where callers have always found them.
from provenance.marks.changes import (  # noqa: F401
    DIFFERENCE_SIGMA,
    DIFFERENCE_THRESHOLD,
    PHOTOMETRIC_CELL,
    Alignment,
    Photometric,
    changed_pixels,
    describe_changes,
    difference_png,
    fit_photometric,
    pixel_difference,
)
from provenance.marks.matching import (  # noqa: F401
    TIGHT_CROP_SHARE,
    Features,
    Fit,
    affine_part,
    apply_transform,
    best_fit,
    dense_features,
    features,
    is_affine,
    warp,
)

EROSION_PX = 3  # pixels dropped along the covered area's edge, where interpolation mixes in the fill
FILL_TOLERANCE = 6  # colour tolerance of a rotation's constant fill (black corners), JPEG noise included
MIN_REGION_PX = 25  # differing specks smaller than a 5x5 square are noise, not an edit
REFINE_GRID = 3  # 3x3 patches for the sub-pixel refinement
REFINE_GRID_PERSPECTIVE = 4  # 4x4 for a perspective fit, whose correction is a homography too (8 parameters)


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
    grey_a = warp(grey_u, transform, (width, height), cv2.INTER_LINEAR).astype(np.float32)
    window = cv2.createHanningWindow((side, side), cv2.CV_32F)
    centres, targets = [], []
    grid = REFINE_GRID if is_affine(transform) else REFINE_GRID_PERSPECTIVE
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
    if not is_affine(transform) and len(centres) >= 8:
        # ORB's keypoints (detection scale, pyramid levels) leave a perspective fit off by a pixel or two at the
        # corners in ways a similarity cannot take out; with 8+ patch shifts a homography correction can.
        homography, _ = cv2.findHomography(np.array(centres), np.array(targets), cv2.LMEDS)
        if homography is None or not np.isfinite(homography).all():
            return None
        frame = np.array([[0.0, 0.0], [width - 1.0, 0.0], [0.0, height - 1.0], [width - 1.0, height - 1.0]])
        if np.abs(apply_transform(homography, frame) - frame).max() > 4:
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
    best, flipped = best_fit(ups, orig)
    original_pixels = original_rgb.shape[0] * original_rgb.shape[1]
    if best is None and upload_rgb.shape[0] * upload_rgb.shape[1] <= TIGHT_CROP_SHARE * original_pixels:
        best, flipped = best_fit(ups, dense_features(original_rgb))
    if best is None:
        return None
    height, width = upload_rgb.shape[:2]
    transform = best.transform.astype(np.float64)  # 3x3; matrix below is its affine part (the transform if affine)
    if flipped:  # the fit maps the mirrored upload; compose the mirror x -> width - 1 - x
        transform = transform @ np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out_h, out_w = original_rgb.shape[:2]
    placed = _place(upload_rgb, original_rgb, transform, flipped, best.perspective)
    if placed is None:
        return None
    transform, matrix, covered, mask = placed
    rotation, scale = _rotation_and_scale(matrix, flipped)
    aligned = _warp_upload(upload_rgb, transform, scale, (out_w, out_h))
    x0, y0, x1, y1 = _crop_box(transform, width, height, (out_w, out_h))
    light = fit_photometric(aligned, original_rgb, mask)
    difference = pixel_difference(aligned, original_rgb, mask, light)
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
        changed=changed_pixels(difference),
        homography=None if is_affine(transform) else transform,
    )


def _place(
    upload_rgb: np.ndarray, original_rgb: np.ndarray, transform: np.ndarray, flipped: bool, perspective: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The fitted transform refined, its affine part, and the original's pixels the upload covers (all, and eroded).

    None when the eroded covered area is empty. A rotation or a keystone leaves constant-colour fill in the
    upload's corners, which covers nothing.
    """
    height, width = upload_rgb.shape[:2]
    out_h, out_w = original_rgb.shape[:2]
    matrix = affine_part(transform, width, height)
    rough_rotation, scale = _rotation_and_scale(matrix, flipped)
    erosion = EROSION_PX + math.ceil(1.0 / min(scale, 1.0))  # an enlarged upload pixel smears further
    kernel = np.ones((2 * erosion + 1,) * 2, np.uint8)
    valid = np.full((height, width), 255, np.uint8)
    if abs(rough_rotation) > 0.2 or perspective:  # a rotation or a keystone leaves constant-colour fill
        valid -= _fill_mask(upload_rgb, original_rgb, matrix)

    def covered_by(transform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        covered = warp(valid, transform, (out_w, out_h), cv2.INTER_NEAREST) > 0
        return covered, cv2.erode(covered.astype(np.uint8), kernel) > 0

    covered, mask = covered_by(transform)
    if not mask.any():
        return None
    refined = _refine(upload_rgb, original_rgb, transform, mask)
    if refined is not None:
        transform = refined
        matrix = affine_part(transform, width, height)
        covered, mask = covered_by(transform)
    return transform, matrix, covered, mask


def _warp_upload(upload_rgb: np.ndarray, transform: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The upload warped into the original's frame (``size``: width, height), a large one shrunk first."""
    height, width = upload_rgb.shape[:2]
    source, warp_transform = upload_rgb, transform
    if scale > 1.5:  # shrink a large upload first: a bilinear warp alone would alias
        factor = 1.0 / scale
        small = (max(1, round(width * factor)), max(1, round(height * factor)))
        source = cv2.resize(upload_rgb, small, interpolation=cv2.INTER_AREA)
        fx, fy = small[0] / width, small[1] / height
        to_small = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
        warp_transform = transform @ np.linalg.inv(to_small)
    # Bicubic: the mark is read from 8x8-pixel block statistics that bilinear interpolation of an enlarged
    # copy blurs (on detailed images it halved the evidence of a 0.75x JPEG copy).
    return warp(source, warp_transform, size, cv2.INTER_CUBIC)


def _crop_box(transform: np.ndarray, width: int, height: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The original's pixels (x0, y0, x1, y1, end exclusive) the upload's frame maps onto, within ``size``."""
    out_w, out_h = size
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = apply_transform(transform, corners) + 0.5  # pixel edges of the original
    x0, y0 = (max(0, min(n, round(v))) for v, n in zip(mapped.min(axis=0), (out_w, out_h), strict=True))
    x1, y1 = (max(0, min(n, round(v))) for v, n in zip(mapped.max(axis=0), (out_w, out_h), strict=True))
    return x0, y0, x1, y1


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
    difference = pixel_difference(aligned, original_rgb, mask, light)
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
        changed=changed_pixels(difference),
    )
