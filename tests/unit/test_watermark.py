"""Stage 2: the watermark is the library's arithmetic with a keyed layout, error-corrected, and survives re-encoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from imwatermark import WatermarkDecoder, WatermarkEncoder

from provenance.marks import watermark
from tests.conftest import PHOTOS, decode, encode, photo

WATERMARK_ID = 0xC0FFEE42
KEY = watermark.MarkKey(bytes(range(32)))


def _stock_coder(bits: np.ndarray | None = None) -> watermark.FastDwtDctSvd:
    """Our vectorised arithmetic with the library's own (unkeyed) layout."""
    payload = [] if bits is None else list(bits)
    return watermark.FastDwtDctSvd(watermarks=payload, wmLen=watermark.PAYLOAD_BITS, scales=watermark.SCALES, block=4)


def test_fast_embedder_with_the_stock_layout_marks_what_the_library_marks_with_less_distortion() -> None:
    """Same approximation band as the library (all any decoder reads), without its 2x2 transposition of U."""
    rgb = photo("astronaut.png")
    bits = watermark.encode_payload(WATERMARK_ID, KEY)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    stock = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=watermark.SCALES)[:, :, ::-1]
    ours = _stock_coder(bits).encode(np.ascontiguousarray(rgb[:, :, ::-1]))[:, :, ::-1]

    def approximation(image: np.ndarray) -> np.ndarray:
        u = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV)[:, :, 1].astype(float)
        return (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2]) / 2

    assert np.abs(approximation(stock) - approximation(ours)).mean() < 1.0  # uint8 rounding only
    assert cv2.PSNR(rgb, np.ascontiguousarray(ours)) > cv2.PSNR(rgb, np.ascontiguousarray(stock)) + 1.5
    # The keyed mark uses the same step (the same margin to the decision boundaries) but moves each singular
    # value to the nearest level of its phase, not the one in its own cell: less distortion, never more.
    keyed = watermark.embed(rgb, WATERMARK_ID, KEY)
    assert cv2.PSNR(rgb, keyed) > cv2.PSNR(rgb, np.ascontiguousarray(ours)) + 1.5


@pytest.mark.parametrize("name", PHOTOS)
def test_the_library_and_the_service_no_longer_read_each_others_marks(name: str) -> None:
    """The mark used to be the library's layout, so its stock decoder read our raw bits and its encoder
    could replay them. With the keyed layout and dither it reads chance on our marks, and a stock mark of
    the very bits we embed reads nothing here. The arithmetic is still the library's: with the stock
    layout our coder and the library read each other's marks bit for bit (blocks whose largest singular
    value sits exactly on a quantisation step may move to either of two equally valid levels depending
    on float evaluation order; the bits never differ)."""
    rgb = photo(name)
    bits = watermark.encode_payload(WATERMARK_ID, KEY)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", list(bits))
    stock = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=watermark.SCALES)
    ours = np.ascontiguousarray(watermark.embed(rgb, WATERMARK_ID, KEY)[:, :, ::-1])
    decoder = WatermarkDecoder("bits", watermark.PAYLOAD_BITS)
    read_by_library = np.array(decoder.decode(ours, "dwtDctSvd", scales=watermark.SCALES)).astype(np.uint8)
    assert np.count_nonzero(read_by_library == bits) < 60  # chance is 40 +- 4.5; a reading mark would be ~80
    assert not watermark.detect(np.ascontiguousarray(stock[:, :, ::-1]), KEY).detected
    # The kept arithmetic, both ways, with the library's layout.
    assert np.array_equal(_stock_coder().vote_fractions(np.ascontiguousarray(stock[:, :, ::-1])) > 0.5, bits)
    stock_layout_ours = _stock_coder(bits).encode(np.ascontiguousarray(rgb[:, :, ::-1]))
    read = np.array(decoder.decode(stock_layout_ours, "dwtDctSvd", scales=watermark.SCALES)).astype(np.uint8)
    assert np.array_equal(read, bits)


def test_reed_solomon_corrects_three_bytes_and_rejects_noise() -> None:
    bits = watermark.encode_payload(WATERMARK_ID, KEY).copy()
    for byte in (0, 4, 9):
        bits[byte * 8 : byte * 8 + 8] ^= 1
    assert watermark.decode_payload(bits, KEY) == (WATERMARK_ID, 3)
    rng = np.random.default_rng(7)
    accepted = sum(
        watermark.decode_payload(rng.integers(0, 2, watermark.PAYLOAD_BITS), KEY) is not None for _ in range(2000)
    )
    assert accepted == 0


@pytest.mark.parametrize("name", PHOTOS)
def test_marked_photo_survives_jpeg_75_and_half_resize(name: str) -> None:
    rgb = photo(name)
    marked = watermark.embed(rgb, WATERMARK_ID, KEY)
    assert cv2.PSNR(rgb, marked) > 37
    assert watermark.detect(marked, KEY).watermark_id == WATERMARK_ID
    jpeg75 = decode(encode(marked, "JPEG", quality=75))
    assert watermark.detect(jpeg75, KEY).watermark_id == WATERMARK_ID
    height, width = marked.shape[:2]
    half = cv2.resize(marked, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    found = watermark.detect(half, KEY)
    assert found.watermark_id == WATERMARK_ID and found.scale == 2.0


def test_unmarked_photos_yield_nothing() -> None:
    for name in PHOTOS:
        assert not watermark.detect(photo(name), KEY).detected


def test_too_small_images_are_refused() -> None:
    assert not watermark.can_mark(200, 200)
    assert watermark.can_mark(256, 256)


def test_the_mark_is_keyed_so_the_public_id_is_not_enough_to_forge_it() -> None:
    rgb = photo("astronaut.png")
    forged = watermark.embed(rgb, WATERMARK_ID, watermark.MarkKey.generate())  # right id, attacker's key
    assert not watermark.detect(forged, KEY).detected
    assert watermark.detect(watermark.embed(rgb, WATERMARK_ID, KEY), KEY).watermark_id == WATERMARK_ID
    # What is embedded for an id depends on the key: two keys share almost no bits beyond chance.
    other = watermark.encode_payload(WATERMARK_ID, watermark.MarkKey.generate())
    assert 15 < int(np.count_nonzero(other != watermark.encode_payload(WATERMARK_ID, KEY))) < 65


def test_seal_is_a_permutation_and_flat_images_read_nothing() -> None:
    rng = np.random.default_rng(3)
    ids = [0, 1, 2**32 - 1, *map(int, rng.integers(0, 2**32, 200))]
    sealed = [KEY.seal(i) for i in ids]
    assert [KEY.unseal(s) for s in sealed] == ids and len(set(sealed)) == len(set(ids))
    # All-zero votes used to decode as id 0; with the keyed mask they are not a codeword.
    assert watermark.decode_payload(np.zeros(watermark.PAYLOAD_BITS, dtype=np.uint8), KEY) is None
    for value in (0, 128, 255):
        flat = np.full((512, 512, 3), value, dtype=np.uint8)
        assert not watermark.detect(flat, KEY).detected


def test_false_positive_probability_follows_the_code() -> None:
    assert watermark.codeword_acceptance_probability(0) == 2.0**-48
    assert 7.0e-6 < watermark.codeword_acceptance_probability(3) < 7.2e-6
    rgb = photo("coffee.png")
    found = watermark.detect(watermark.embed(rgb, WATERMARK_ID, KEY), KEY)
    expected = found.tries * watermark.codeword_acceptance_probability(found.corrected_errors)
    assert found.false_positive_probability == expected and found.false_positive_probability < 1e-5


def test_mark_key_file_is_private_and_stable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "keys" / "watermark.key"
    first = watermark.MarkKey.load_or_create(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert watermark.MarkKey.load_or_create(path).seal(WATERMARK_ID) == first.seal(WATERMARK_ID)
