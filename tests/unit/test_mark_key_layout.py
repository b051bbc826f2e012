"""The mark's layout is keyed: without the key, its raw bits can be neither read nor replayed.

The library's stock decoder (``imwatermark``'s ``EmbedDwtDctSvd`` with the service's parameters) is
the keyless attacker's reader, and its encoder the attacker's replay tool. Real photos from
scikit-image and generated patterns, 512x512.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from imwatermark.dwtDctSvd import EmbedDwtDctSvd
from PIL import Image

from provenance.marks import watermark
from provenance.marks.align import Photometric
from provenance.marks.confirm import DEFAULT_THRESHOLD, confirm_mark
from tests.conftest import SKIMAGE_DATA, decode, encode

KEY = watermark.MarkKey(bytes(range(32)))
RECORD_ID = 0x5EED1234
PHOTO_NAMES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
               "motorcycle_right.png", "retina.jpg", "ihc.png", "hubble_deep_field.jpg"]  # fmt: skip


def _square(name: str, corner: int = 0) -> np.ndarray:
    """A 512x512 view of a scikit-image photo: its top-left (0) or bottom-right (1) square."""
    image = np.asarray(Image.open(SKIMAGE_DATA / name).convert("RGB"))
    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (0, 0) if corner == 0 else (h - side, w - side)
    return cv2.resize(image[y : y + side, x : x + side], (512, 512), interpolation=cv2.INTER_AREA)


def _pattern() -> np.ndarray:
    """A generated picture: colour gradients, rings and mild noise."""
    y, x = np.mgrid[0:512, 0:512].astype(np.float64)
    rings = 60 * np.sin(np.hypot(x - 200, y - 300) / 9.0)
    noise = np.random.default_rng(11).normal(0, 4, (512, 512, 3))
    rgb = np.stack([x / 3 + 40 + rings, y / 3 + 60, 200 - x / 4 + rings / 2], axis=2) + noise
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _stock(bits: list[int] | None = None) -> EmbedDwtDctSvd:
    return EmbedDwtDctSvd(watermarks=bits or [], wmLen=watermark.PAYLOAD_BITS, scales=watermark.SCALES, block=4)


def _stock_read(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(_stock().decode(np.ascontiguousarray(rgb[:, :, ::-1])), dtype=np.uint8)


def _stock_embed(rgb: np.ndarray, bits: np.ndarray) -> np.ndarray:
    bgr = _stock([int(b) for b in bits]).encode(np.ascontiguousarray(rgb[:, :, ::-1]))
    return np.ascontiguousarray(np.asarray(bgr)[:, :, ::-1]).astype(np.uint8)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [_square(name) for name in PHOTO_NAMES] + [_pattern()]


def test_the_stock_decoder_reads_chance_on_our_marks(images: list[np.ndarray]) -> None:
    """100 marks (10 pictures x 10 ids): the library's decoder agrees with the embedded bits by chance only,
    while our own reader gets every id back. Chance over 8000 bits: 0.5 +- 0.006."""
    rng = np.random.default_rng(2)
    accuracies, psnrs = [], []
    for rgb in images:
        for watermark_id in map(int, rng.integers(0, 2**32, 10)):
            marked = watermark.embed(rgb, watermark_id, KEY)
            psnrs.append(cv2.PSNR(rgb, marked))
            expected = watermark.encode_payload(watermark_id, KEY)
            accuracies.append(float(np.mean(_stock_read(marked) == expected)))
            assert watermark.detect(marked, KEY).watermark_id == watermark_id
    assert len(accuracies) == 100
    assert abs(float(np.mean(accuracies)) - 0.5) < 0.05, np.mean(accuracies)
    assert max(accuracies) < 0.75  # no single mark is readable either (chance: 0.5 +- 0.056)
    assert float(np.mean(psnrs[:90])) >= 38.0  # the photos: same strength as the stock layout


def test_raw_bits_replayed_with_the_library_read_nothing_and_confirm_nothing() -> None:
    """The attack the keyed layout closes: read a certified image's bits with the stock decoder and embed
    them with the stock encoder into other photos. Read in the original's grid with no change of light
    (the attacker's best case), not one copy names the record or confirms it. (A faint echo remains, p
    about 1e-3 to 0.06 here: each block's own vote is part of the stock bit replayed onto it; see
    ``provenance.marks.confirm``.)"""
    original = _square("astronaut.png")
    marked = watermark.embed(original, RECORD_ID, KEY)
    expected = watermark.encode_payload(RECORD_ID, KEY)
    raw = _stock_read(marked)
    hosts = [_square(name, corner) for name in PHOTO_NAMES[1:] for corner in (0, 1)][:12]
    assert len(hosts) == 12
    full = np.ones((512, 512), dtype=bool)
    for host in hosts:
        replay = _stock_embed(host, raw)
        assert np.array_equal(_stock_read(replay), raw)  # the replay is a faithful stock mark of those bits
        assert watermark.detect(replay, KEY).watermark_id is None
        mark = confirm_mark(replay, full, marked, expected, key=KEY, photometric=Photometric())
        assert not mark.confirmed and mark.p_value > DEFAULT_THRESHOLD, mark
    # Replaying the bits we actually embed (which the attacker cannot read) does no better.
    replay = _stock_embed(hosts[0], expected)
    assert watermark.detect(replay, KEY).watermark_id is None
    assert not confirm_mark(replay, full, marked, expected, key=KEY, photometric=Photometric()).confirmed


def test_two_keys_give_independent_layouts_and_a_wrong_key_reads_nothing(images: list[np.ndarray]) -> None:
    other = watermark.MarkKey(bytes(range(1, 33)))
    a, b = KEY.layout, other.layout
    assert a.period == b.period == watermark.LAYOUT_PERIOD
    # Balanced: every run of 80 blocks carries each payload bit exactly once, under either key.
    for layout in (a, b):
        runs = layout.bits.reshape(watermark.LAYOUT_GROUPS, watermark.PAYLOAD_BITS)
        assert np.array_equal(np.sort(runs, axis=1), np.tile(np.arange(watermark.PAYLOAD_BITS), (runs.shape[0], 1)))
        assert layout.dither.min() >= 0.0 and layout.dither.max() < 1.0
        assert abs(float(layout.dither.mean()) - 0.5) < 0.02  # uniform offsets over the whole step
    same_bit = float(np.mean(a.bits == b.bits))
    assert same_bit < 3 / watermark.PAYLOAD_BITS  # chance: 1/80
    assert abs(float(np.corrcoef(a.dither, b.dither)[0, 1])) < 0.05
    assert not np.array_equal(a.bits, watermark.MarkLayout.stock().bits[np.arange(a.period) % 80])
    # The layout is a function of the key alone: a new instance of the same key derives the same one.
    again = watermark.MarkKey(bytes(range(32))).layout
    assert np.array_equal(again.bits, a.bits) and np.array_equal(again.dither, a.dither)

    rgb = images[1]
    marked = watermark.embed(rgb, RECORD_ID, KEY)
    assert watermark.detect(marked, KEY).watermark_id == RECORD_ID
    assert not watermark.detect(marked, other).detected
    # Even knowing the exact bits embedded, the other key's layout reads chance.
    expected = watermark.encode_payload(RECORD_ID, KEY)
    full = np.ones(rgb.shape[:2], dtype=bool)
    assert confirm_mark(marked, full, marked, expected, key=KEY, photometric=Photometric()).confirmed
    wrong = confirm_mark(marked, full, marked, expected, key=other, photometric=Photometric())
    assert not wrong.confirmed and wrong.p_value > 1e-3


def test_the_layout_derivation_is_pinned() -> None:
    """Every mark ever embedded depends on this derivation: changing it would orphan them all."""
    layout = watermark.MarkKey(bytes(range(32))).layout
    assert layout.bits[:8].tolist() == PINNED_BITS
    assert np.round(layout.dither[:4] * 2**32).astype(np.int64).tolist() == PINNED_DITHER


def test_our_reads_survive_the_usual_changes_after_keying(images: list[np.ndarray]) -> None:
    for rgb in images[:3]:
        marked = watermark.embed(rgb, RECORD_ID, KEY)
        assert watermark.detect(decode(encode(marked, "JPEG", quality=75)), KEY).watermark_id == RECORD_ID
        half = cv2.resize(marked, (256, 256), interpolation=cv2.INTER_AREA)
        found = watermark.detect(half, KEY)
        assert found.watermark_id == RECORD_ID and found.scale == 2.0


def test_rescaled_tries_stop_at_the_working_resolution() -> None:
    """No try builds an image over MAX_RESCALE_PIXELS; ``tries`` counts the reads actually made."""
    assert watermark.MAX_RESCALE_PIXELS == 2048 * 2048
    rng = np.random.default_rng(4)
    large = rng.integers(0, 256, (2100, 2100, 3), dtype=np.uint8)  # every rescaled try would exceed it
    assert watermark.detect(large, KEY).tries == 1
    medium = rng.integers(0, 256, (1100, 1100, 3), dtype=np.uint8)  # x2 would be 4.8 MP: skipped; 1.5, 4/3 kept
    assert watermark.detect(medium, KEY).tries == 3
    # A 2048x2048 original shrunk by half still gets its x2 read (exactly the bound).
    original = cv2.resize(_square("coffee.png"), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    marked = watermark.embed(original, RECORD_ID, KEY)
    found = watermark.detect(cv2.resize(marked, (1024, 1024), interpolation=cv2.INTER_AREA), KEY)
    assert found.watermark_id == RECORD_ID and found.scale == 2.0 and found.tries == 2


# The key bytes(range(32)): its first payload-bit indices and 32-bit dither numerators.
PINNED_BITS = [16, 39, 33, 12, 0, 67, 68, 79]
PINNED_DITHER = [1609403626, 4194567359, 1041879827, 2902285416]
