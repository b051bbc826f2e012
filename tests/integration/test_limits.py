"""Bounded resources: the pixel budget shared by concurrent requests, and uploads whose structure is the attack.

Memory is measured on a real server process (``provenance serve``), from its ``VmHWM``; the full-size run
(four 39.9 MP uploads at once) is ``make bench-memory``.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from benchmarks import memory as memory_bench
from provenance import media
from provenance.api.errors import http_headers, http_status
from provenance.errors import MetadataTooLargeError, ServerBusyError
from provenance.marks import watermark
from provenance.media.budget import PixelBudget
from provenance.runtime.services import Services
from tests.conftest import encode, photo

PATHOLOGICAL = memory_bench.pathological_files()
EXPECTED = {
    "png-1.5M-empty-text-chunks": (413, "metadata_too_large"),
    "png-100k-empty-idat-chunks": (422, "image_too_complex"),
    "png-9MB-iccp": (413, "metadata_too_large"),
    "png-9MB-exif": (413, "metadata_too_large"),
    "png-ztxt-bomb-64MB": (422, "corrupt_image"),
    "png-header-50000x50000": (413, "too_many_pixels"),
    "jpeg-10MB-xmp": (413, "metadata_too_large"),
    "jpeg-5000-comments": (413, "metadata_too_large"),
    "jpeg-500-scans": (422, "image_too_complex"),
    "webp-5000-chunks": (413, "metadata_too_large"),
}


def test_every_pathological_file_has_an_expectation() -> None:
    assert set(PATHOLOGICAL) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pathological_structure_is_refused_before_decoding(name: str, client: TestClient) -> None:
    status, code = EXPECTED[name]
    for path in ("/v1/verify", "/v1/certify"):
        start = time.perf_counter()
        response = client.post(path, files={"file": (f"{name}.bin", PATHOLOGICAL[name])})
        elapsed = time.perf_counter() - start
        assert (response.status_code, response.json()["error"]) == (status, code), response.text
        assert elapsed < 10, f"{path} took {elapsed:.1f} s to refuse {name}"  # a guard; make bench-memory times it


def test_ordinary_metadata_passes() -> None:
    """A photo with an ICC profile, EXIF, XMP and a few text chunks is not what the limits are for."""
    rgb = photo("coffee.png")
    icc = bytes(range(256)) * 12  # 3 kB
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    exif[0x0110] = "Model"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">' + b" " * 4000 + b"</x:xmpmeta>"
    jpeg = encode(rgb, "JPEG", quality=90, icc_profile=icc, exif=exif.tobytes(), xmp=xmp)
    png_info = PngInfo()
    for index in range(50):
        png_info.add_text(f"key{index}", "value " * 20, zip=index % 2 == 0)
    png = encode(rgb, "PNG", pnginfo=png_info, icc_profile=icc, exif=exif.tobytes())
    webp = encode(rgb, "WEBP", quality=90, icc_profile=icc, exif=exif.tobytes(), xmp=xmp)
    progressive = encode(rgb, "JPEG", quality=90, progressive=True)
    for data in (jpeg, png, webp, progressive):
        _, width, height = media.check_limits(data, max_bytes=25 << 20, max_pixels=40_000_000)
        assert (width, height) == (rgb.shape[1], rgb.shape[0])
        assert media.decode(data, max_bytes=25 << 20, max_pixels=40_000_000).rgb.shape == rgb.shape


def test_metadata_limits_follow_the_settings() -> None:
    png = PATHOLOGICAL["png-9MB-exif"]
    limits = media.StructureLimits(max_metadata_bytes=16 << 20)
    media.check_structure(png, "png", limits)  # allowed when the operator raises the limit
    with pytest.raises(MetadataTooLargeError):
        media.check_structure(png, "png", media.StructureLimits(max_metadata_bytes=1 << 20))
    few_chunks = media.StructureLimits(max_metadata_chunks=10)
    with pytest.raises(MetadataTooLargeError):
        media.check_structure(PATHOLOGICAL["jpeg-5000-comments"], "jpeg", few_chunks)


def test_striped_pixel_copy_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding copies Pillow's pixels in stripes (memory); every mode comes out as a plain copy would."""
    monkeypatch.setattr(media, "_STRIPE_BYTES", 1000)  # many stripes, the last one short
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (97, 131, 4), dtype=np.uint8)
    for mode in ("RGB", "RGBA", "L", "LA", "P"):
        source = Image.fromarray(rgba, "RGBA").convert(mode)
        out = io.BytesIO()
        source.save(out, "PNG")
        image = media.decode(out.getvalue(), max_bytes=10**8, max_pixels=10**8)
        reference = np.asarray(source.convert("RGBA"))
        assert np.array_equal(image.rgb, reference[:, :, :3]), mode
        if image.alpha is not None:
            assert np.array_equal(image.alpha, reference[:, :, 3]), mode
        assert image.rgb.flags.c_contiguous


def test_striped_watermark_is_the_same_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marking and reading one stripe of blocks at a time (memory) gives the very bytes and votes of one pass."""
    key = watermark.MarkKey(b"s" * 32)
    rgb = photo("astronaut.png")[:509, :487]  # sides that are not multiples of the block
    whole = watermark.embed(rgb, 0xC0FFEE, key)
    coder = watermark.FastDwtDctSvd(watermarks=[], wmLen=watermark.PAYLOAD_BITS, scales=watermark.SCALES, block=4)
    votes = coder.vote_fractions(whole)
    stripes = watermark._stripes
    monkeypatch.setattr(watermark, "_stripes", lambda rows, cols: stripes(rows, cols, 97))
    assert len(watermark._stripes(509 // 8, 487 // 8)) > 3
    assert np.array_equal(watermark.embed(rgb, 0xC0FFEE, key), whole)
    assert np.array_equal(coder.vote_fractions(whole), votes)
    assert watermark.detect(whole, key).watermark_id == 0xC0FFEE


def test_budget_never_holds_more_than_its_pixels() -> None:
    budget = PixelBudget(100, wait_s=30)
    held: list[int] = []
    lock = threading.Lock()
    most = 0

    def work(pixels: int) -> None:
        nonlocal most
        with budget.reserve(pixels) as cost:
            with lock:
                held.append(cost)
                most = max(most, sum(held))
            time.sleep(0.02)
            with lock:
                held.remove(cost)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [60, 30, 45, 10, 70, 250, 5, 40] * 3))
    assert most <= 100 and budget.peak_in_use <= 100
    assert budget.in_use == 0
    assert budget.peak_in_use == 100  # the 250-pixel image ran, alone, with the whole budget


def test_budget_refuses_with_retry_after_when_the_wait_runs_out() -> None:
    budget = PixelBudget(100, wait_s=0.2)
    cost = budget.acquire(80)
    start = time.monotonic()
    with pytest.raises(ServerBusyError) as refused:
        budget.acquire(30)
    assert 0.15 < time.monotonic() - start < 5
    assert http_status(refused.value) == 503 and refused.value.code == "busy"
    assert int((http_headers(refused.value) or {})["Retry-After"]) >= 1
    budget.acquire(20, timeout_s=0)  # what fits goes through at once
    budget.release(20)
    budget.release(cost)
    assert budget.in_use == 0


def test_budget_is_first_come_first_served() -> None:
    """A large image waiting is not overtaken by small ones that would fit: it cannot be starved."""
    budget = PixelBudget(100, wait_s=10)
    first = budget.acquire(50)
    order: list[str] = []
    big = threading.Thread(target=lambda: (budget.acquire(100), order.append("big"), budget.release(100)))
    big.start()
    time.sleep(0.1)  # the big one is now first in line
    small = threading.Thread(target=lambda: (budget.acquire(10), order.append("small"), budget.release(10)))
    small.start()
    time.sleep(0.1)
    assert order == []  # 50 pixels are free, but the small one waits behind the big one
    budget.release(first)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_budget_refuses_at_once_when_the_line_is_full() -> None:
    budget = PixelBudget(10, wait_s=10, max_waiting=1)
    cost = budget.acquire(10)
    waiter = threading.Thread(target=lambda: budget.release(budget.acquire(10)))
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    with pytest.raises(ServerBusyError):
        budget.acquire(1)
    assert time.monotonic() - start < 1  # no waiting: the line was full
    budget.release(cost)
    waiter.join(5)
    assert budget.in_use == 0


def test_api_answers_busy_while_the_budget_is_full(services: Services, client: TestClient) -> None:
    budget = services.pixel_budget
    data = encode(photo("chelsea.png"))
    saved_wait = budget.wait_s
    budget.wait_s = 0.3
    cost = budget.acquire(budget.capacity)
    try:
        for path in ("/v1/verify", "/v1/certify"):
            response = client.post(path, files={"file": ("c.png", data)})
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "busy"
            assert int(response.headers["Retry-After"]) >= 1
    finally:
        budget.release(cost)
        budget.wait_s = saved_wait
    assert client.post("/v1/verify", files={"file": ("c.png", data)}).status_code == 200


@pytest.fixture(scope="module")
def small_budget_server() -> Iterator[memory_bench.Server]:
    """A real server process whose budget fits one 2400x2400 image at a time."""
    with tempfile.TemporaryDirectory(prefix="provenance-limits-") as tmp:
        server = memory_bench.start_server(
            Path(tmp) / "data",
            {"PROVENANCE_PIXEL_BUDGET": str(2400 * 2400), "PROVENANCE_PIXEL_BUDGET_WAIT_S": "120"},
        )
        try:
            yield server
        finally:
            server.stop()


def test_concurrent_uploads_stay_within_the_budget_on_a_real_server(small_budget_server: memory_bench.Server) -> None:
    """Four uploads at once cost the server about what one costs: the budget runs them one after another."""
    server = small_budget_server
    data = memory_bench.zero_png(2400)
    warm = memory_bench.concurrent_posts(server, "/v1/certify", data, 1, auth=True)  # first-use allocations
    single = memory_bench.concurrent_posts(server, "/v1/certify", data, 1, auth=True)
    four = memory_bench.concurrent_posts(server, "/v1/certify", data, 4, auth=True)
    assert warm.statuses == {201: 1} and single.statuses == {201: 1} and four.statuses == {201: 4}
    one_image = single.peak_mb - single.rss_before_mb
    all_four = four.peak_mb - four.rss_before_mb
    assert one_image > 20, single  # the measurement sees the image's working memory
    # Measured here: one image ~100 MB; four in turn ~180 MB; four at once without the budget ~430 MB.
    assert all_four < 2.2 * one_image + 30, (single, four)
    verify = memory_bench.concurrent_posts(server, "/v1/verify", data, 4, auth=False)
    assert verify.statuses == {200: 4}
    # Four verifications in turn ~130 MB; at once without the budget ~540 MB.
    assert verify.peak_mb - verify.rss_before_mb < 2.5 * one_image + 30, (single, verify)
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
