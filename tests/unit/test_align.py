"""Aligning modified copies to a candidate original, and confirming the record with a calibrated mark read.

Every edit a fact-checker meets (crops at any offset, mirror, small rotations, resizes, light,
re-encoding, noise, blur and a combination) must align back onto the original with the right
geometry and confirm the record at p <= 1e-6; the same edits of an image marked for another id or
under another key, unmarked copies and unrelated photos must never confirm.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from provenance.marks import watermark
from provenance.marks.align import Alignment, align, describe_changes, difference_png
from provenance.marks.confirm import (
    CODE_FACTOR,
    WEIGHT_LEVELS,
    confirm_mark,
    names_another_codeword,
    rademacher_tail,
)
from tests.conftest import decode, encode, photo

KEY = watermark.MarkKey(bytes(range(32)))
RECORD_ID, OTHER_ID = 0xC0FFEE42, 0x5EED1234
EXPECTED = watermark.encode_payload(RECORD_ID, KEY)


def _pil_op(rgb: np.ndarray, op: str, amount: float) -> np.ndarray:
    image = Image.fromarray(rgb)
    if op == "brightness":
        image = ImageEnhance.Brightness(image).enhance(amount)
    elif op == "contrast":
        image = ImageEnhance.Contrast(image).enhance(amount)
    elif op == "rotate":  # counter-clockwise on screen, same frame: the corners are filled black
        image = image.rotate(amount, resample=Image.Resampling.BICUBIC)
    elif op == "resize":
        image = image.resize((round(rgb.shape[1] * amount), round(rgb.shape[0] * amount)), Image.Resampling.LANCZOS)
    elif op == "blur":
        image = image.filter(ImageFilter.GaussianBlur(amount))
    return np.asarray(image.convert("RGB")).copy()


def _crop(rgb: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    height, width = rgb.shape[:2]
    side = math.sqrt(share)
    w, h = round(width * side), round(height * side)
    x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return rgb[y0 : y0 + h, x0 : x0 + w].copy(), (x0, y0, x0 + w, y0 + h)


def _edits(rgb: np.ndarray, seed: int) -> dict[str, tuple[np.ndarray, dict[str, object]]]:
    """Each edit with what align() must find: crop box, scale, rotation, mirror, light."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[np.ndarray, dict[str, object]]] = {}
    for share in (0.9, 0.75, 0.5):
        cropped, box = _crop(rgb, share, rng)
        out[f"crop {share:.0%}"] = (cropped, {"crop": box})
    out["mirror"] = (np.ascontiguousarray(rgb[:, ::-1]), {"flip": True})
    for degrees in (2.0, 5.0, -5.0):
        out[f"rotate {degrees:+.0f}"] = (_pil_op(rgb, "rotate", degrees), {"rotation": degrees})
    for factor in (0.5, 0.75, 0.8, 2.0):
        out[f"resize {factor}x"] = (_pil_op(rgb, "resize", factor), {"scale": factor})
    for amount in (1.2, 0.8):
        out[f"brightness {amount - 1:+.0%}"] = (_pil_op(rgb, "brightness", amount), {"brightness": amount - 1})
        out[f"contrast {amount - 1:+.0%}"] = (_pil_op(rgb, "contrast", amount), {"contrast": amount - 1})
    height, width = rgb.shape[:2]
    stretched = np.asarray(Image.fromarray(rgb).resize((width, round(height * 0.8)), Image.Resampling.BICUBIC))
    out["stretch height 0.8x + jpeg 80"] = (decode(encode(stretched, "JPEG", quality=80)), {"scale": math.sqrt(0.8)})
    for amount in (1.3, 0.7):
        saturated = np.asarray(ImageEnhance.Color(Image.fromarray(rgb)).enhance(amount))
        out[f"saturation {amount - 1:+.0%}"] = (saturated, {})
    out["jpeg 50"] = (decode(encode(rgb, "JPEG", quality=50)), {})
    out["webp 75"] = (decode(encode(rgb, "WEBP", quality=75)), {})
    out["noise 5"] = (np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8), {})
    out["blur 1"] = (_pil_op(rgb, "blur", 1), {})
    combo = decode(encode(_pil_op(rgb, "resize", 0.75), "JPEG", quality=75))
    out["resize 0.75 + jpeg 75 + brightness +10%"] = (_pil_op(combo, "brightness", 1.1), {"scale": 0.75})
    cropped, _ = _crop(rgb, 0.75, rng)
    turned = _pil_op(np.ascontiguousarray(cropped[:, ::-1]), "rotate", 3.0)
    out["crop 75% + mirror + rotate 3 + jpeg 75"] = (
        decode(encode(turned, "JPEG", quality=75)),
        {"flip": True, "rotation": 3.0},
    )
    return out


def _geometry_errors(found: Alignment, truth: dict[str, object]) -> list[str]:
    errors = []
    scale = float(truth.get("scale", 1.0))  # type: ignore[arg-type]
    rotation = float(truth.get("rotation", 0.0))  # type: ignore[arg-type]
    if abs(found.scale - scale) > 0.01:
        errors.append(f"scale {found.scale:.3f} != {scale}")
    if abs(found.rotation_deg - rotation) > 0.3:
        errors.append(f"rotation {found.rotation_deg:.2f} != {rotation}")
    if found.flipped != truth.get("flip", False):
        errors.append(f"flipped {found.flipped}")
    if "crop" in truth and max(abs(a - b) for a, b in zip(found.crop_box, truth["crop"], strict=True)) > 2:  # type: ignore[call-overload]
        errors.append(f"crop box {found.crop_box} != {truth['crop']}")
    for key in ("brightness", "contrast"):
        if key in truth and abs(getattr(found.photometric, key) - float(truth[key])) > 0.04:  # type: ignore[arg-type]
            errors.append(f"{key} {getattr(found.photometric, key):+.3f} != {truth[key]}")
    return errors


@pytest.fixture(scope="module")
def marked() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each photo marked for the record and, separately, for another record (same key)."""
    names = ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png")
    return {
        name: (watermark.embed(photo(name), RECORD_ID, KEY), watermark.embed(photo(name), OTHER_ID, KEY))
        for name in names
    }


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png"])
def test_every_edit_aligns_and_confirms_only_the_right_record(
    name: str, marked: dict[str, tuple[np.ndarray, np.ndarray]]
) -> None:
    original, other = marked[name]
    edits, others = _edits(original, seed=1), _edits(other, seed=1)
    failures = []
    for edit, (upload, truth) in edits.items():
        found = align(upload, original)
        if found is None:
            failures.append(f"{edit}: did not align")
            continue
        failures += [f"{edit}: {error}" for error in _geometry_errors(found, truth)]
        mark = confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY, photometric=found.photometric)
        if not mark.confirmed:
            failures.append(f"{edit}: not confirmed, p={mark.p_value:.1e}")
        # The same edit of the image marked for another record aligns just as well, and never confirms.
        wrong = align(others[edit][0], original)
        assert wrong is not None
        wrong_mark = confirm_mark(wrong.aligned, wrong.mask, original, EXPECTED, key=KEY, photometric=wrong.photometric)
        if wrong_mark.confirmed or wrong_mark.p_value < 1e-3:
            failures.append(f"{edit}: another record's mark reads p={wrong_mark.p_value:.1e}")
    assert not failures, failures


def test_crops_at_random_offsets_keep_the_record(marked: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    original, _ = marked["motorcycle_left.png"]
    rng = np.random.default_rng(7)
    for share in (0.9, 0.75, 0.5):
        for _ in range(4):
            upload, box = _crop(original, share, rng)
            found = align(upload, original)
            assert found is not None and not _geometry_errors(found, {"crop": box}), (share, box)
            assert abs(found.coverage - share) < 0.02
            mark = confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY, photometric=found.photometric)
            assert mark.confirmed and mark.p_value < 1e-12, (share, box, mark)


def test_unmarked_and_other_key_copies_are_not_confirmed(marked: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    original, _ = marked["astronaut.png"]
    unmarked = photo("astronaut.png")
    forged = watermark.embed(unmarked, RECORD_ID, watermark.MarkKey(bytes(range(1, 33))))  # right id, other key
    for source in (unmarked, forged):
        edits = _edits(source, seed=2)
        for edit in ("crop 75%", "mirror", "rotate +5", "jpeg 50", "resize 0.75 + jpeg 75 + brightness +10%"):
            upload, _ = edits[edit]
            found = align(upload, original)
            assert found is not None  # same content: it aligns, which alone proves nothing
            mark = confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY, photometric=found.photometric)
            assert not mark.confirmed and mark.p_value > 1e-4, (edit, mark)


def test_unrelated_photos_do_not_align_and_a_stereo_twin_does_not_confirm(
    marked: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    names = [
        "astronaut.png",
        "coffee.png",
        "chelsea.png",
        "rocket.jpg",
        "camera.png",
        "ihc.png",
        "hubble_deep_field.jpg",
    ]
    for upload_name in names:
        upload = photo(upload_name)
        for original_name in ("astronaut.png", "coffee.png", "chelsea.png"):
            if original_name != upload_name:
                assert align(upload, marked[original_name][0]) is None, (upload_name, original_name)
    # The right camera of a stereo pair shows the same scene: it aligns, but carries no mark.
    original, _ = marked["motorcycle_left.png"]
    found = align(photo("motorcycle_right.png"), original)
    assert found is not None
    assert not confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY).confirmed


def test_rademacher_tail_is_exact() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        weights = rng.integers(0, 7, int(rng.integers(1, 11)))
        observed = int(rng.integers(-40, 40))
        signs = np.array(np.meshgrid(*[[-1, 1]] * len(weights))).reshape(len(weights), -1)
        assert rademacher_tail(weights, observed) == pytest.approx(float(np.mean(weights @ signs >= observed)))
    assert rademacher_tail(np.ones(80, dtype=np.int64), 80) == 2.0**-80


def _reading(upload: np.ndarray, original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    found = align(upload, original)
    assert found is not None
    u = watermark.u_plane(found.aligned)
    votes = watermark.masked_soft_votes(128 + (u - 128) / found.photometric.gain, found.mask, layout=KEY.layout)
    weights = np.rint(np.abs(votes.score_sums) / np.abs(votes.score_sums).max() * WEIGHT_LEVELS).astype(np.int64)
    return weights, np.sign(votes.score_sums).astype(np.int64)


def _threshold(weights: np.ndarray, p_value: float) -> int:
    """Smallest statistic whose reported p-value (CODE_FACTOR x the exact tail) is <= p_value."""
    low, high = -int(weights.sum()), int(weights.sum()) + 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if CODE_FACTOR * rademacher_tail(weights, middle) <= p_value else (middle + 1, high)
    return low


def test_p_values_are_calibrated_for_unrelated_payloads_and_other_records(
    marked: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    original, _ = marked["coffee.png"]
    weights, read = _reading(decode(encode(original, "JPEG", quality=50)), original)
    rng = np.random.default_rng(5)
    # Unrelated payloads: expected bits are fair coins, so P[p <= x] <= x / CODE_FACTOR exactly.
    coins = 2 * rng.integers(0, 2, (20000, watermark.PAYLOAD_BITS)) - 1
    statistic = coins @ (weights * read)
    for x in (0.1, 0.02, 0.002):
        share = float(np.mean(statistic >= _threshold(weights, x)))
        assert 0.6 * x / CODE_FACTOR <= share <= 1.15 * x / CODE_FACTOR, (x, share)
    # Other records under the same key: codeword differences are even-weight Reed-Solomon words.
    others = np.array(
        [2 * watermark.encode_payload(int(i), KEY).astype(np.int64) - 1 for i in rng.integers(0, 2**32, 3000)]
    )
    statistic = others @ (weights * read)
    for x in (0.1, 0.02):
        assert float(np.mean(statistic >= _threshold(weights, x))) <= 1.3 * x / CODE_FACTOR, x
    assert int(np.sum(statistic >= _threshold(weights, 1e-6))) == 0
    differences = (others != 2 * EXPECTED.astype(np.int64) - 1).sum(axis=1)
    assert np.all(differences % 2 == 0) and differences.min() >= 14  # the structure CODE_FACTOR covers


def test_a_clear_mark_of_another_id_is_never_confirmed() -> None:
    other = watermark.encode_payload(OTHER_ID, KEY)
    assert names_another_codeword(other, EXPECTED)
    noisy = other.copy()
    noisy[[3, 20, 45]] ^= 1  # three read errors in three bytes: still the other id's codeword
    assert names_another_codeword(noisy, EXPECTED)
    unread = np.zeros(watermark.PAYLOAD_BITS, dtype=bool)
    unread[40:48] = True  # a crop that lost every block of one byte's bits: an erasure, not an error
    assert names_another_codeword(np.where(unread, 0, other), EXPECTED, unread)
    assert not names_another_codeword(EXPECTED, EXPECTED)
    own = EXPECTED.copy()
    own[[0, 9, 18]] ^= 1
    assert not names_another_codeword(own, EXPECTED)


def test_masked_reading_is_the_decoders_reading() -> None:
    marked_rgb = watermark.embed(photo("chelsea.png"), RECORD_ID, KEY)
    coder = watermark.FastDwtDctSvd(
        watermarks=[], wmLen=watermark.PAYLOAD_BITS, scales=watermark.SCALES, block=4, layout=KEY.layout
    )
    u8 = cv2.cvtColor(marked_rgb, cv2.COLOR_RGB2YUV)[:, :, 1].astype(np.float64)
    votes = watermark.masked_soft_votes(u8, layout=KEY.layout)
    assert np.array_equal(votes.ones, coder.vote_fractions(marked_rgb))
    assert np.array_equal(votes.score_sums > 0, EXPECTED.astype(bool))
    nothing = confirm_mark(marked_rgb, np.zeros(marked_rgb.shape[:2], bool), marked_rgb, EXPECTED, key=KEY)
    assert not nothing.confirmed and nothing.blocks_used == 0 and nothing.p_value == 1.0


def _red(png: bytes) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)
    return (rgb[:, :, 0] > 150) & (rgb[:, :, 0] - rgb[:, :, 1] > 80)


def test_difference_image_shows_a_painted_region_and_nothing_else(
    marked: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    original, _ = marked["astronaut.png"]
    edited = original.copy()
    edited[150:250, 300:420] = original[360:460, 40:160]  # a patch pasted from elsewhere
    upload = decode(encode(_pil_op(edited, "resize", 0.8), "JPEG", quality=90))
    found = align(upload, original)
    assert found is not None
    red = _red(difference_png(found, original))
    assert red[156:244, 306:414].mean() > 0.9
    elsewhere = found.mask.copy()
    elsewhere[138:262, 288:432] = False
    assert red[elsewhere].mean() < 0.005
    assert any(
        change.startswith("edited: ") for change in describe_changes(found, "jpeg", "png", (410, 410), (512, 512))
    )
    mark = confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY, photometric=found.photometric)
    assert mark.confirmed  # a local edit does not hide where the picture came from

    # Light alone, or re-encoding, changes nothing that should light up.
    edits = _edits(original, seed=3)
    for edit in ("brightness +20%", "contrast -20%", "jpeg 50", "blur 1"):
        upload, _ = edits[edit]
        found = align(upload, original)
        assert found is not None and _red(difference_png(found, original)).mean() < 0.005, edit

    # What a crop leaves out is hatched grey, not red.
    upload, (x0, y0, x1, y1) = _crop(original, 0.5, np.random.default_rng(4))
    found = align(upload, original)
    assert found is not None
    png = difference_png(found, original)
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    outside = np.ones(picture.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert set(np.unique(picture[outside])) <= {90, 150} and not _red(png)[outside].any()


def test_describe_changes_names_each_change(marked: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    original, _ = marked["coffee.png"]
    edits = _edits(original, seed=5)
    upload, _ = edits["resize 0.75 + jpeg 75 + brightness +10%"]
    found = align(upload, original)
    assert found is not None
    changes = describe_changes(found, "jpeg", "png", (upload.shape[1], upload.shape[0]), (600, 400))
    assert changes[:2] == ["resized to 0.75x", "dimensions 600x400 -> 450x300 pixels"]
    assert changes[2] in ("brightness +9%", "brightness +10%", "brightness +11%")  # JPEG and clipping blur it
    assert changes[-1] == "re-encoded as JPEG (original: PNG)"
    upload, _ = edits["crop 75% + mirror + rotate 3 + jpeg 75"]
    found = align(upload, original)
    assert found is not None
    changes = describe_changes(found, "jpeg", "png", (upload.shape[1], upload.shape[0]), (600, 400))
    assert changes[0] == "mirrored horizontally"
    assert changes[1] in (f"rotated {d}° counter-clockwise" for d in ("2.9", "3.0", "3.1"))  # fit within 0.1°
    assert changes[2].startswith("cropped to (") and changes[2].endswith(" of the area")
    found = align(edits["contrast -20%"][0], original)
    assert found is not None
    assert describe_changes(found, "png", "png", (600, 400), (600, 400)) == ["contrast -20%"]
    upload, _ = edits["stretch height 0.8x + jpeg 80"]
    found = align(upload, original)
    assert found is not None
    changes = describe_changes(found, "jpeg", "png", (upload.shape[1], upload.shape[0]), (600, 400))
    stretch = "stretched: width x1.00, height x{} (aspect ratio changed)"
    assert changes[0] in (stretch.format(h) for h in ("0.79", "0.80", "0.81"))
    found = align(edits["saturation +30%"][0], original)
    assert found is not None
    assert describe_changes(found, "png", "png", (600, 400), (600, 400)) in (
        [f"saturation +{n}%"] for n in (29, 30, 31)
    )


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-cropped to a square and resized to ``size`` (as the robustness benchmark prepares its photos)."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    cut = np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side])
    return cv2.resize(cut, (size, size), interpolation=cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC)


def _grid_error(found: Alignment, truth: np.ndarray, shape: tuple[int, ...], use_homography: bool = True) -> float:
    """Largest distance (original pixels) between where ``found`` and ``truth`` (3x3) send a 9x9 grid of the upload."""
    height, width = shape[:2]
    ys, xs = np.mgrid[0.1 * height : 0.9 * height : 9j, 0.1 * width : 0.9 * width : 9j]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    fitted = np.vstack([found.matrix, [0, 0, 1]])
    if use_homography and found.homography is not None:
        fitted = found.homography
    ours, theirs = points @ fitted.T, points @ truth.T
    return float(np.abs(ours[:, :2] / ours[:, 2:] - theirs[:, :2] / theirs[:, 2:]).max())


def _keystone(rgb: np.ndarray, amount: float) -> tuple[np.ndarray, np.ndarray]:
    """The top edge shortened by ``amount`` of the width (perspective warp, black wedges); upload -> original."""
    height, width = rgb.shape[:2]
    frame = np.float32([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]])
    moved = frame.copy()
    moved[0, 0] += amount / 2 * width
    moved[1, 0] -= amount / 2 * width
    warp = cv2.getPerspectiveTransform(frame, moved)
    return cv2.warpPerspective(rgb, warp, (width, height), flags=cv2.INTER_CUBIC), np.linalg.inv(warp)


def test_1024_crops_of_a_jpeg_align_to_a_pixel() -> None:
    rng = np.random.default_rng(11)
    for name in ("astronaut.png", "coffee.png", "rocket.jpg"):
        original = _square(photo(name), 1024)
        for _ in range(2):
            cropped, (x0, y0, x1, y1) = _crop(original, 0.75, rng)
            upload = decode(encode(cropped, "JPEG", quality=50))
            found = align(upload, original)
            assert found is not None, (name, x0, y0)
            truth = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
            assert _grid_error(found, truth, upload.shape) < 1.0, (name, x0, y0)
            assert found.homography is None  # a crop is a similarity: no perspective fit is preferred
            assert max(abs(a - b) for a, b in zip(found.crop_box, (x0, y0, x1, y1), strict=True)) <= 2


def test_tight_crops_of_1024_photos_align() -> None:
    """A crop keeping a tenth of the picture holds few of the original's strongest corners: the dense retry finds it."""
    rng = np.random.default_rng(12)
    aligned = tried = 0
    for name in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
        original = _square(photo(name), 1024)
        for _ in range(3):
            cropped, (x0, y0, _, _) = _crop(original, 0.1, rng)
            found = align(decode(encode(cropped)), original)
            truth = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
            tried += 1
            aligned += found is not None and _grid_error(found, truth, cropped.shape) < 2.0
    assert aligned >= 10, f"{aligned}/{tried}"  # 2/12 with the default features alone


def test_a_keystoned_copy_aligns_with_a_homography_and_keeps_the_record(
    marked: dict[str, tuple[np.ndarray, np.ndarray]],
) -> None:
    for name, size in (("chelsea.png", 1024), ("motorcycle_left.png", 512)):
        original = _square(photo(name), size)
        upload, truth = _keystone(original, 0.05)
        found = align(upload, original)
        assert found is not None and found.homography is not None, name
        assert _grid_error(found, truth, upload.shape) < 1.0, name
        # ``matrix`` stays the closest affine map: within the keystone's own size (2.5% of the width) everywhere.
        assert _grid_error(found, truth, upload.shape, use_homography=False) < 0.025 * size, name
        assert not found.flipped and abs(found.rotation_deg) < 0.5 and abs(found.scale - 1) < 0.05, name
    original, _ = marked["astronaut.png"]
    upload, _ = _keystone(original, 0.05)
    found = align(decode(encode(upload, "JPEG", quality=85)), original)
    assert found is not None and found.homography is not None
    mark = confirm_mark(found.aligned, found.mask, original, EXPECTED, key=KEY, photometric=found.photometric)
    assert mark.confirmed, mark


def _edited(rgb: np.ndarray, edit: str) -> tuple[np.ndarray, np.ndarray]:
    """A copy and the 3x3 map from its pixels to the original's."""
    height, width = rgb.shape[:2]
    if edit == "rotate 10, cropped inside":
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), 10.0, 1.0)
        turned = cv2.warpAffine(rgb, turn, (width, height), flags=cv2.INTER_CUBIC)
        side = int(min(width, height) / (math.cos(math.radians(10)) + math.sin(math.radians(10)))) - 2
        x0, y0 = (width - side) // 2, (height - side) // 2
        shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
        return turned[y0 : y0 + side, x0 : x0 + side].copy(), np.linalg.inv(np.vstack([turn, [0, 0, 1]])) @ shift
    if edit == "rotate 10, black corners":
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), 10.0, 1.0)
        turned = cv2.warpAffine(rgb, turn, (width, height), flags=cv2.INTER_CUBIC)
        return turned, np.linalg.inv(np.vstack([turn, [0, 0, 1]]))
    if edit == "median 5":
        return cv2.medianBlur(rgb, 5), np.eye(3)
    if edit == "sharpen":
        return np.asarray(Image.fromarray(rgb).filter(ImageFilter.UnsharpMask(2, 150, 3))), np.eye(3)
    if edit == "gamma 1.4":
        return np.clip(np.rint(255.0 * (rgb / 255.0) ** 1.4), 0, 255).astype(np.uint8), np.eye(3)
    if edit == "hue 20":
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(int) + 10) % 180).astype(np.uint8)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), np.eye(3)
    if edit == "black and white":
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB), np.eye(3)
    if edit == "strong denoise":
        return cv2.fastNlMeansDenoisingColored(rgb, None, 15, 15, 7, 21), np.eye(3)
    assert edit == "half, JPEG 20, enlarged"
    small = decode(encode(_pil_op(rgb, "resize", 0.5), "JPEG", quality=20))
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)), np.eye(3)


@pytest.mark.parametrize(
    "edit",
    [
        "rotate 10, cropped inside",
        "rotate 10, black corners",
        "median 5",
        "sharpen",
        "gamma 1.4",
        "hue 20",
        "black and white",
        "strong denoise",
        "half, JPEG 20, enlarged",
    ],
)
def test_filters_and_larger_rotations_align(edit: str) -> None:
    original = _square(photo("chelsea.png"), 512)
    upload, truth = _edited(original, edit)
    found = align(upload, original)
    assert found is not None
    assert _grid_error(found, truth, upload.shape) < 1.5


def test_smooth_pictures_align_and_unrelated_smooth_pictures_do_not() -> None:
    # A retina scan and a microscope slide have under a hundred ORB corners at the default FAST threshold.
    rng = np.random.default_rng(12)
    for name in ("retina.jpg", "cell.png"):
        original = _square(photo(name), 512)
        cropped, (x0, y0, _, _) = _crop(original, 0.75, rng)
        upload = decode(encode(cropped, "JPEG", quality=50))
        found = align(upload, original)
        assert found is not None, name
        truth = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
        assert _grid_error(found, truth, upload.shape) < 1.5, name
    smooth = ["retina.jpg", "cell.png", "clock_motion.png", "moon.png", "color.png", "coins.png"]
    for upload_name in smooth:
        upload = photo(upload_name)
        for original_name in [*smooth, "astronaut.png", "chelsea.png"]:
            if original_name != upload_name:
                assert align(upload, photo(original_name)) is None, (upload_name, original_name)
