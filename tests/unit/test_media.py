"""Stage 1: input recognition and limits, before any pixel is decoded."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from provenance import media
from provenance.errors import CorruptImageError, PayloadTooLargeError, TooManyPixelsError, UnsupportedMediaError
from tests.conftest import encode, photo


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is tiny: a decompression bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt,kwargs", [("PNG", {}), ("JPEG", {"quality": 90}), ("WEBP", {"quality": 90})])
def test_decodes_the_three_formats(fmt: str, kwargs: dict) -> None:
    rgb = photo("coffee.png")
    image = media.decode(encode(rgb, fmt, **kwargs), max_bytes=10**8, max_pixels=10**8)
    assert image.format == fmt.lower() and (image.width, image.height) == (rgb.shape[1], rgb.shape[0])


def test_alpha_survives_a_round_trip() -> None:
    rgba = np.dstack([photo("coffee.png"), np.full(photo("coffee.png").shape[:2], 128, np.uint8)])
    image = media.decode(encode(rgba), max_bytes=10**8, max_pixels=10**8)
    assert image.alpha is not None and int(image.alpha.mean()) == 128
    again = media.decode(media.encode(image), max_bytes=10**8, max_pixels=10**8)
    assert np.array_equal(again.alpha, image.alpha) and np.array_equal(again.rgb, image.rgb)


def test_size_limit_is_checked_first() -> None:
    with pytest.raises(PayloadTooLargeError, match="limit is 100 bytes"):
        media.decode(encode(photo("coffee.png")), max_bytes=100, max_pixels=10**8)


def test_decompression_bomb_refused_from_the_header() -> None:
    bomb = png_header_only(50_000, 50_000)  # 2.5 gigapixels claimed in under 200 bytes
    assert len(bomb) < 200
    with pytest.raises(TooManyPixelsError, match="50000x50000"):
        media.check_limits(bomb, max_bytes=10**6, max_pixels=40_000_000)


@pytest.mark.parametrize("data", [b"", b"hello world", b"GIF89a" + b"\x00" * 20])
def test_unsupported_data(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaError):
        media.decode(data, max_bytes=10**6, max_pixels=10**6)


def test_truncated_image_is_corrupt() -> None:
    data = encode(photo("coffee.png"))
    with pytest.raises(CorruptImageError):
        media.decode(data[: len(data) // 2], max_bytes=10**8, max_pixels=10**8)


def test_16_bit_greyscale_is_certified_faithfully() -> None:
    """A 16-bit greyscale PNG used to become white (Pillow's convert clips levels above 255)."""
    rng = np.random.default_rng(16)
    levels = (rng.integers(0, 65536, (300, 300))).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(levels).save(out, "PNG")
    assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
    image = media.decode(out.getvalue(), max_bytes=10**8, max_pixels=10**8)
    expected = np.rint(levels / 257.0)
    assert np.abs(image.rgb[:, :, 0].astype(int) - expected).max() <= 1
    assert (image.rgb[:, :, 0] == image.rgb[:, :, 1]).all() and (image.rgb[:, :, 1] == image.rgb[:, :, 2]).all()


def test_exif_orientation_is_applied_and_noted() -> None:
    rgb = np.zeros((40, 80, 3), dtype=np.uint8)
    rgb[:, :40] = 255  # left half white
    pil = Image.fromarray(rgb)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = io.BytesIO()
    pil.save(out, "JPEG", quality=95, exif=exif)
    image = media.decode(out.getvalue(), max_bytes=10**8, max_pixels=10**8)
    assert image.rgb.shape[:2] == (80, 40)  # shown upright: the certified pixels are the displayed ones
    assert image.rgb[:20].mean() > 200 and image.rgb[60:].mean() < 50  # the white half is now on top
    assert any("orientation 6" in n for n in image.notes)


def test_animated_images_are_refused() -> None:
    frames = [Image.fromarray(np.full((64, 64, 3), v, dtype=np.uint8)) for v in (0, 128, 255)]
    for fmt in ("PNG", "WEBP"):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100)
        with pytest.raises(UnsupportedMediaError, match="animated"):
            media.decode(out.getvalue(), max_bytes=10**8, max_pixels=10**8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+tRNS", "RGBA", "I;16", "CMYK"])
def test_every_pixel_mode_is_decoded_as_it_renders(mode: str) -> None:
    """Greyscale, palette, alpha, 16-bit and CMYK files decode to their own 8-bit rendering, within 1 level.

    The expected pixels are computed from the image in memory before it is written, so a decoder that loses
    the palette, drops or inverts a channel, or clips 16-bit levels fails here.
    """
    source = photo("coffee.png")[:128, :160]
    rgba = np.dstack([source, np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (128, 1))])
    pil = Image.fromarray(rgba, "RGBA")
    if mode == "I;16":
        levels = (np.asarray(pil.convert("L")).astype(np.uint16) * 257) + np.uint16(100)
        image_in_mode = Image.fromarray(levels)
        expected = np.repeat(np.rint(levels / 257.0)[:, :, None], 3, axis=2)
    else:
        if mode == "P":
            image_in_mode = pil.convert("RGB").convert("P")
        elif mode == "P+tRNS":  # a palette with per-entry transparency (PNG's tRNS chunk)
            image_in_mode = pil.convert("RGB").convert("P")
            image_in_mode.info["transparency"] = bytes(range(256))  # palette entry i: alpha i
        else:
            image_in_mode = pil.convert(mode)
        expected = np.asarray(image_in_mode.convert("RGBA"))[:, :, :3]
    has_alpha = "A" in mode or mode == "P+tRNS"
    expected_alpha = np.asarray(image_in_mode.convert("RGBA"))[:, :, 3] if has_alpha else None
    fmt, options = ("JPEG", {"quality": 100}) if mode == "CMYK" else ("PNG", {})
    out = io.BytesIO()
    image_in_mode.save(out, fmt, **options)
    decoded = media.decode(out.getvalue(), max_bytes=10**8, max_pixels=10**8)
    if mode == "CMYK":  # lossy: compare with the file's own rendering, and check no channel was inverted
        rendered = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB")).astype(int)
        assert np.abs(decoded.rgb.astype(int) - rendered).max() <= 1
        assert np.abs(decoded.rgb.astype(int) - expected.astype(int)).mean() < 3
    else:
        assert np.abs(decoded.rgb.astype(int) - expected.astype(int)).max() <= 1
    if expected_alpha is not None:
        assert decoded.alpha is not None
        assert np.abs(decoded.alpha.astype(int) - expected_alpha.astype(int)).max() <= 1
        assert decoded.alpha.std() > 10  # the transparency was kept, not flattened to opaque
    else:
        assert decoded.alpha is None
