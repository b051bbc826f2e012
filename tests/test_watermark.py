"""Stage 2: the watermark is the library's scheme, error-corrected, and survives re-encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from imwatermark import WatermarkDecoder, WatermarkEncoder

from provenance import watermark
from tests.conftest import PHOTOS, decode, encode, photo

WATERMARK_ID = 0xC0FFEE42


def test_fast_embedder_matches_the_library() -> None:
    rgb = photo("astronaut.png")
    bits = watermark.encode_payload(WATERMARK_ID)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    stock = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=watermark.SCALES)
    ours = watermark.embed(rgb, WATERMARK_ID)[:, :, ::-1]
    assert np.abs(stock.astype(int) - ours.astype(int)).max() <= 1  # float rounding at most


@pytest.mark.parametrize("name", PHOTOS)
def test_library_and_fast_path_read_each_others_marks(name: str) -> None:
    """Blocks whose largest singular value sits exactly on a quantisation step (flat areas) may move to
    either of two equally valid levels depending on float evaluation order; the bits never differ."""
    rgb = photo(name)
    bits = watermark.encode_payload(WATERMARK_ID)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    stock = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=watermark.SCALES)
    ours = np.ascontiguousarray(watermark.embed(rgb, WATERMARK_ID)[:, :, ::-1])
    decoder = WatermarkDecoder("bits", watermark.PAYLOAD_BITS)
    read_by_library = np.array(decoder.decode(ours, "dwtDctSvd", scales=watermark.SCALES)).astype(np.uint8)
    assert np.array_equal(read_by_library, bits)
    assert watermark.detect(np.ascontiguousarray(stock[:, :, ::-1])).watermark_id == WATERMARK_ID


def test_reed_solomon_corrects_three_bytes_and_rejects_noise() -> None:
    bits = watermark.encode_payload(WATERMARK_ID).copy()
    for byte in (0, 4, 9):
        bits[byte * 8 : byte * 8 + 8] ^= 1
    assert watermark.decode_payload(bits) == (WATERMARK_ID, 3)
    rng = np.random.default_rng(7)
    accepted = sum(
        watermark.decode_payload(rng.integers(0, 2, watermark.PAYLOAD_BITS)) is not None for _ in range(2000)
    )
    assert accepted == 0


@pytest.mark.parametrize("name", PHOTOS)
def test_marked_photo_survives_jpeg_75_and_half_resize(name: str) -> None:
    rgb = photo(name)
    marked = watermark.embed(rgb, WATERMARK_ID)
    assert cv2.PSNR(rgb, marked) > 32
    assert watermark.detect(marked).watermark_id == WATERMARK_ID
    jpeg75 = decode(encode(marked, "JPEG", quality=75))
    assert watermark.detect(jpeg75).watermark_id == WATERMARK_ID
    height, width = marked.shape[:2]
    half = cv2.resize(marked, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    found = watermark.detect(half)
    assert found.watermark_id == WATERMARK_ID and found.scale == 2.0


def test_unmarked_photos_yield_nothing() -> None:
    for name in PHOTOS:
        assert not watermark.detect(photo(name)).detected


def test_too_small_images_are_refused() -> None:
    assert not watermark.can_mark(200, 200)
    assert watermark.can_mark(256, 256)
