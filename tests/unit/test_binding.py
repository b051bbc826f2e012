"""Content binding: the comparison that decides whether an upload shows a record's certified picture.

Calibration cases of ``provenance.marks.binding``: global changes (re-encoding, resizing, tone and colour
changes, denoising) never produce an edited region; a flat fill, a pasted logo and an erased object
always do; unrelated photographs never match; a region pasted into another picture is a composite.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from provenance.marks.align import align, direct_alignment
from provenance.marks.binding import compare, pixels_identical
from tests.conftest import SKIMAGE_DATA, photo

NAMES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "ihc.png"]


def square(name: str, size: int = 512) -> np.ndarray:
    image = photo(name) if (SKIMAGE_DATA / name).exists() else None
    assert image is not None
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: square(name) for name in NAMES}


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    _, buffer = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1])


def gamma(rgb: np.ndarray, g: float) -> np.ndarray:
    return (255 * (rgb / 255.0) ** g).astype(np.uint8)


def hue(rgb: np.ndarray, shift: int) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def greyscale(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


GLOBAL_CHANGES = {
    "jpeg 50": lambda i: jpeg(i, 50),
    "jpeg 30": lambda i: jpeg(i, 30),
    "resize 0.5": lambda i: cv2.resize(i, (256, 256), interpolation=cv2.INTER_AREA),
    "resize 0.25": lambda i: cv2.resize(i, (128, 128), interpolation=cv2.INTER_AREA),
    "blur": lambda i: cv2.GaussianBlur(i, (0, 0), 1.5),
    "denoise": lambda i: cv2.fastNlMeansDenoisingColored(i, None, 15, 15, 7, 21),
    "gamma 0.7": lambda i: gamma(i, 0.7),
    "gamma 1.4": lambda i: gamma(i, 1.4),
    "brightness +20%": lambda i: np.clip(i * 1.2, 0, 255).astype(np.uint8),
    "black and white": greyscale,
    "half, jpeg 20, enlarge": lambda i: cv2.resize(
        jpeg(cv2.resize(i, (256, 256), interpolation=cv2.INTER_AREA), 20), (512, 512), interpolation=cv2.INTER_CUBIC
    ),
}


@pytest.mark.parametrize("change", sorted(GLOBAL_CHANGES))
def test_global_changes_match_and_show_no_edit(photos: dict[str, np.ndarray], change: str) -> None:
    for name, original in photos.items():
        upload = GLOBAL_CHANGES[change](original)
        comparison = compare(direct_alignment(upload, original), upload, original)  # type: ignore[arg-type]
        assert comparison.matches, (change, name, comparison.correlation, comparison.unchanged_share)
        assert comparison.kind == "transformed" and comparison.edited_regions == [], (change, name)


def test_a_hue_shift_matches(photos: dict[str, np.ndarray]) -> None:
    for name, original in photos.items():
        upload = hue(original, 10)  # 20 degrees
        comparison = compare(direct_alignment(upload, original), upload, original)  # type: ignore[arg-type]
        assert comparison.matches, name


def fill(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    out = rgb.copy()
    out[200:260, 220:280] = (40, 200, 90)
    return out, (220, 200, 280, 260)


def logo(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    out = rgb.copy()
    yy, xx = np.mgrid[0:64, 0:64]
    out[300:364, 100:164] = np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1)
    return out, (100, 300, 164, 364)


@pytest.mark.parametrize("edit", [fill, logo])
def test_local_edits_are_regions(photos: dict[str, np.ndarray], edit) -> None:  # type: ignore[no-untyped-def]
    for name, original in photos.items():
        edited, (x0, y0, x1, y1) = edit(original)
        upload = jpeg(edited, 90)
        comparison = compare(direct_alignment(upload, original), upload, original)  # type: ignore[arg-type]
        assert comparison.matches and comparison.kind == "edited", (name, comparison.edited_regions)
        region = comparison.edited_regions[0]
        assert region.x0 <= x0 + 8 and region.y0 <= y0 + 8 and region.x1 >= x1 - 8 and region.y1 >= y1 - 8, name
        assert region.share < 0.05, name


def test_an_erased_object_is_a_region() -> None:
    original = square("astronaut.png")
    mask = np.zeros(original.shape[:2], np.uint8)
    cv2.circle(mask, (256, 200), 40, 255, -1)
    upload = cv2.inpaint(original, mask, 5, cv2.INPAINT_TELEA)
    comparison = compare(direct_alignment(upload, original), upload, original)  # type: ignore[arg-type]
    assert comparison.kind == "edited"
    box = comparison.edited_regions[0].box
    assert box[0] < 256 < box[2] and box[1] < 200 < box[3]


def test_unrelated_photographs_never_match(photos: dict[str, np.ndarray]) -> None:
    pictures = list(photos.values()) + [square(n)[::-1].copy() for n in NAMES]  # and upside-down views
    for i, upload in enumerate(pictures):
        for j, original in enumerate(pictures[: len(NAMES)]):
            if i % len(NAMES) == j and i < len(NAMES):
                continue
            comparison = compare(direct_alignment(upload, original), upload, original)  # type: ignore[arg-type]
            assert not comparison.matches, (i, j, comparison.correlation)
            assert comparison.block_agreement is None or comparison.block_agreement < 0.5


def test_a_pasted_region_is_a_composite(photos: dict[str, np.ndarray]) -> None:
    original, host_photo = photos["coffee.png"], photos["rocket.jpg"]
    host = cv2.resize(host_photo, (900, 700), interpolation=cv2.INTER_CUBIC)
    host[180:500, 300:600] = original[60:380, 100:400]
    alignment = align(host, original)
    assert alignment is not None
    comparison = compare(alignment, host, original)
    assert comparison.matches and comparison.kind == "composite"
    assert comparison.contained_region is not None
    x0, y0, x1, y1 = comparison.contained_region.box
    assert x0 <= 308 and y0 <= 188 and x1 >= 592 and y1 >= 492 and x1 - x0 < 300 + 144 and y1 - y0 < 320 + 144


def test_a_caption_bar_is_an_edited_region_not_a_composite(photos: dict[str, np.ndarray]) -> None:
    original = photos["chelsea.png"]
    bar = np.full((60, 512, 3), 255, np.uint8)
    cv2.putText(bar, "BREAKING NEWS", (10, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3)
    upload = jpeg(np.vstack([bar, original]), 85)
    alignment = align(upload, original)
    assert alignment is not None
    comparison = compare(alignment, upload, original)
    assert comparison.kind == "edited"
    assert any(region.y1 <= 72 for region in comparison.edited_regions)


def test_pixels_identical() -> None:
    picture = square("coffee.png", 256)
    assert pixels_identical(picture, picture.copy())
    changed = picture.copy()
    changed[0, 0, 0] ^= 1
    assert not pixels_identical(picture, changed)
    assert not pixels_identical(picture, picture[:255])
