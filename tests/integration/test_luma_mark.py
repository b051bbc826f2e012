"""The luminance component of the mark: what it survives, what it costs, and that its test stays exact."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter
from skimage.metrics import structural_similarity

from provenance.marks import luma, watermark
from provenance.marks.confirm import DEFAULT_THRESHOLD, exact_test
from tests.conftest import decode, encode, photo, wait_for

KEY = watermark.MarkKey(b"luma component test key, 32 byte")
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png")


def _square(rgb: np.ndarray, size: int = 512) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(rgb[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    return decode(encode(rgb, "JPEG", quality=quality))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2)


def _hue(rgb: np.ndarray, degrees: int) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + degrees // 2) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _gamma(rgb: np.ndarray, gamma: float) -> np.ndarray:
    return np.clip(255.0 * (rgb / 255.0) ** gamma, 0, 255).astype(np.uint8)


EDITS = {
    "black and white": _gray,
    "JPEG 30": lambda x: _jpeg(x, 30),
    "gamma 1.4": lambda x: _gamma(x, 1.4),
    "hue 20": lambda x: _hue(x, 20),
    "sharpen": lambda x: np.asarray(Image.fromarray(x).filter(ImageFilter.UnsharpMask(2, 150, 3))),
    "non-local means": lambda x: cv2.fastNlMeansDenoisingColored(x, None, 10, 10, 7, 21),
}


def _reading(rgb: np.ndarray, reference: luma.LumaReference, expected: np.ndarray) -> float:
    evidence = luma.luma_evidence(rgb, None, reference, KEY.luma_layout)
    result = exact_test(evidence.score_sums, evidence.counts, evidence.cells, expected, DEFAULT_THRESHOLD, "luminance")
    return result.p_value


@pytest.mark.parametrize("name", PHOTOS)
def test_the_luminance_mark_survives_what_removes_the_chroma_mark(name: str) -> None:
    host = _square(photo(name))
    expected = watermark.encode_payload(4242, KEY).astype(np.int64)
    marked = watermark.mark(host, 4242, KEY)
    assert marked.luma_reference is not None
    for edit, apply in EDITS.items():
        assert _reading(apply(marked.rgb), marked.luma_reference, expected) <= 1e-9, (name, edit)


def test_both_components_together_keep_the_picture() -> None:
    """PSNR at least 38 dB for the whole mark; the luminance part costs little SSIM; flat areas stay faint."""
    for name in PHOTOS:
        host = _square(photo(name))
        marked = watermark.mark(host, 7, KEY).rgb
        chroma_only = watermark.mark(host, 7, KEY, luma=False).rgb
        assert cv2.PSNR(host, marked) >= 38.0, name
        ssim = structural_similarity(host, marked, channel_axis=2)
        assert ssim >= 0.95 and structural_similarity(host, chroma_only, channel_axis=2) - ssim <= 0.015, name
    flat = np.full((512, 512, 3), 128, dtype=np.uint8)
    luminance = luma.embed_luma(flat, watermark.encode_payload(7, KEY), KEY.luma_layout)[0].astype(np.float64)
    assert np.abs(luminance - 128).max() <= round(luma.MIN_STRENGTH + 0.5)  # the floor strength, rounded


def test_without_the_mark_the_reading_is_chance() -> None:
    """The exact test's level holds: an unmarked picture read against its reference and random codes."""
    host = _square(photo("coffee.png"))
    _, reference = luma.embed_luma(host, watermark.encode_payload(1, KEY), KEY.luma_layout)  # host's reference
    copy = _jpeg(host, 50)  # the unmarked picture, re-encoded
    evidence = luma.luma_evidence(copy, None, reference, KEY.luma_layout)
    rng = np.random.default_rng(5)
    p_values = np.array(
        [
            exact_test(evidence.score_sums, evidence.counts, evidence.cells, rng.integers(0, 2, 80), 1e-6, "x").p_value
            for _ in range(400)
        ]
    )
    assert p_values.min() > 1e-4
    assert np.mean(p_values <= 0.05) <= 0.06  # the reported p is twice the exact tail: conservative


def test_another_records_mark_is_not_confirmed() -> None:
    host = _square(photo("chelsea.png"))
    marked = watermark.mark(host, 1001, KEY)
    assert marked.luma_reference is not None
    other = watermark.encode_payload(1002, KEY).astype(np.int64)
    evidence = luma.luma_evidence(_jpeg(marked.rgb, 50), None, marked.luma_reference, KEY.luma_layout)
    result = exact_test(evidence.score_sums, evidence.counts, evidence.cells, other, DEFAULT_THRESHOLD, "luminance")
    assert not result.confirmed and result.names_another_codeword


def test_the_reference_round_trips_and_refuses_garbage() -> None:
    _, reference = luma.embed_luma(_square(photo("astronaut.png")), np.zeros(80, dtype=np.uint8), KEY.luma_layout)
    again = luma.LumaReference.from_bytes(reference.to_bytes())
    assert again.cell == reference.cell and np.array_equal(again.host, reference.host)
    assert np.array_equal(again.strength, reference.strength)
    for bad in (b"", b"PLR1" + b"\0" * 10, reference.to_bytes()[:-5], b"XXXX" + reference.to_bytes()[4:]):
        with pytest.raises(ValueError):
            luma.LumaReference.from_bytes(bad)


def test_cells_grow_with_the_picture() -> None:
    assert luma.cell_size(512, 512) == 8 and luma.cell_size(1024, 1024) == 16 and luma.cell_size(4000, 3000) == 56
    _, reference = luma.embed_luma(
        _square(photo("coffee.png"), 1024), watermark.encode_payload(3, KEY), KEY.luma_layout
    )
    assert (reference.rows, reference.cols, reference.cell) == (64, 64, 16)


def test_a_black_and_white_copy_names_its_record_through_the_api(client: TestClient) -> None:
    """Black and white removes the chroma mark entirely: only the luminance component can confirm the record."""
    body = client.post("/v1/certify", files={"file": ("chelsea.png", encode(_square(photo("chelsea.png"))))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    certified = decode(client.get(f"/v1/records/{body['record_id']}/image").content)
    for edit in (_gray, lambda x: _hue(x, 20)):
        response = client.post("/v1/verify", files={"file": ("copy.jpg", encode(edit(certified), "JPEG", quality=80))})
        result = response.json()
        assert result["record_id"] == body["record_id"] and result["verdict"] == "modified", result
        confirmed = [c for c in result["checks"]["fingerprint"]["candidates"] if c.get("confirmed")]
        assert confirmed and confirmed[0]["component"] == "luminance"
    # The reference is the service's secret: no response carries it.
    record = client.get(f"/v1/records/{body['record_id']}").json()
    assert "reference" not in io.StringIO(str(record)).getvalue()
