"""Attacks with free tools and no secret: copied marks, laundering, container edits, local edits, collages.

Everything runs through the real API on the embedded stack (anvil, C2PA, the blockstore). The
attacker's tools here use only public knowledge: the mark's published scheme (DWT-DCT-SVD on U,
quantisation step 48, 4x4 blocks), never the service's key.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from provenance.certify.certifier import CertifyOptions
from provenance.runtime.services import Services
from tests.conftest import SKIMAGE_DATA, decode, encode, photo, wait_for

STEP, BLOCK = 48, 4  # the public parameters of the scheme


def certify(client: TestClient, rgb: np.ndarray, name: str, **form: str) -> tuple[dict, bytes]:
    response = client.post("/v1/certify", files={"file": (name, encode(rgb))}, data=form)
    assert response.status_code == 201, response.text
    body = response.json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    return body, client.get(f"/v1/records/{body['record_id']}/image").content


def verify(client: TestClient, data: bytes) -> dict:
    response = client.post("/v1/verify", files={"file": ("upload", data)})
    assert response.status_code == 200, response.text
    return response.json()


def hosts(exclude: str, count: int = 12) -> list[np.ndarray]:
    """``count`` 512x512 photographs that are not ``exclude``: crops of the colour photos scikit-image ships."""
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
             "ihc.png", "hubble_deep_field.jpg", "motorcycle_right.png"]  # fmt: skip
    out: list[np.ndarray] = []
    for name in names:
        if name == exclude:
            continue
        image = np.asarray(Image.open(SKIMAGE_DATA / name).convert("RGB"))
        h, w = image.shape[:2]
        side = min(h, w)
        for y, x in ((0, 0), (h - side, w - side)):  # two different views of each photo
            out.append(cv2.resize(image[y : y + side, x : x + side], (512, 512), interpolation=cv2.INTER_AREA))
    return out[:count]


def _u_blocks(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """YUV of the image and the 4x4 blocks of the Haar approximation band of U (the scheme's carrier)."""
    yuv = cv2.cvtColor(rgb[:, :, ::-1].copy(), cv2.COLOR_BGR2YUV).astype(np.float64)
    u = yuv[: yuv.shape[0] // 8 * 8, : yuv.shape[1] // 8 * 8, 1]
    ca = (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2]) / 2
    rows, cols = ca.shape[0] // BLOCK, ca.shape[1] // BLOCK
    return yuv, ca.reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(-1, BLOCK, BLOCK)


def phase_copy(marked: np.ndarray, host: np.ndarray) -> np.ndarray:
    """The strongest keyless copy attack: put the host's block singular values at the marked image's phases.

    Whatever the key chose (which bit each block carries, its dither), the marked image's largest
    singular values sit at their keyed positions modulo the public step; copying those positions into
    another picture's blocks transplants the whole mark without knowing anything about it.
    """
    _, marked_blocks = _u_blocks(marked)
    yuv, host_blocks = _u_blocks(host)
    u, s, vt = np.linalg.svd(host_blocks)
    phase = np.linalg.svd(marked_blocks, compute_uv=False)[:, 0] % STEP
    base = np.floor(s[:, 0] / STEP) * STEP + phase
    options = np.stack([base - STEP, base, base + STEP], axis=1)
    target = options[np.arange(len(base)), np.argmin(np.abs(options - s[:, :1]), axis=1)]
    step = (target - s[:, 0])[:, None, None] * u[:, :, 0, None] * vt[:, None, 0, :]
    rows, cols = yuv.shape[0] // 8, yuv.shape[1] // 8
    delta = step.reshape(rows, cols, BLOCK, BLOCK).swapaxes(1, 2).reshape(rows * BLOCK, cols * BLOCK) / 2
    for dy in (0, 1):
        for dx in (0, 1):
            yuv[dy : rows * 8 : 2, dx : cols * 8 : 2, 1] += delta
    bgr = cv2.cvtColor(np.clip(np.rint(yuv), 0, 255).astype(np.uint8), cv2.COLOR_YUV2BGR)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def residual_copy(marked: np.ndarray, host: np.ndarray) -> np.ndarray:
    """Residual estimation: what a denoiser removes from the marked image, added to another picture."""
    residual = marked.astype(np.float64) - cv2.medianBlur(marked, 3).astype(np.float64)
    return np.clip(host.astype(np.float64) + residual, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def marked(client: TestClient) -> tuple[dict, bytes]:
    return certify(client, photo("astronaut.png"), "astronaut.png", source_type="digitalCapture")


def test_copied_marks_name_no_record_and_are_reported(client: TestClient, marked: tuple[dict, bytes]) -> None:
    body, data = marked
    pixels = decode(data)
    reported = 0
    for index, host in enumerate(hosts("astronaut.png")):
        for attack in (phase_copy, residual_copy):
            forged = attack(pixels, host)
            for upload in (encode(forged), encode(forged, "JPEG", quality=92)):
                result = verify(client, upload)
                assert result["record_id"] is None, (index, attack.__name__, result["verdict"], result["reasons"])
                assert result["verdict"] in ("unknown", "invalid"), result
                assert body["record_id"] not in " ".join(e["record_id"] for e in result["evidence"])
                copied = result["copied_mark"]
                if result["checks"]["watermark"].get("claimed_record_id") == body["record_id"]:
                    # The mark was transplanted and read: the report must say it is a copy, never provenance.
                    assert copied is not None and copied["claimed_by_mark"] == body["record_id"], result
                    assert any("copied mark" in r for r in result["reasons"])
                    reported += 1
    # The phase copy transplants the mark as PNG on most hosts; each such reading was reported as a copy.
    assert reported >= 8


def test_raw_bit_replay_names_nothing(client: TestClient, marked: tuple[dict, bytes]) -> None:
    """What the stock ``imwatermark`` decoder reads from a certified image, embedded by its stock encoder into
    12 other photographs: the bits are chance under the keyed layout, so nothing is named (or even read)."""
    from imwatermark.dwtDctSvd import EmbedDwtDctSvd

    _, data = marked
    pixels = decode(data)

    def stock(bits: list[int] | None = None) -> EmbedDwtDctSvd:
        return EmbedDwtDctSvd(watermarks=bits or [], wmLen=80, scales=[0, STEP, 0], block=BLOCK)

    raw = [int(b) for b in stock().decode(np.ascontiguousarray(pixels[:, :, ::-1]))]
    for host in hosts("astronaut.png"):
        forged = np.ascontiguousarray(np.asarray(stock(raw).encode(np.ascontiguousarray(host[:, :, ::-1])))[:, :, ::-1])
        result = verify(client, encode(forged.astype(np.uint8)))
        assert result["record_id"] is None and result["verdict"] == "unknown", result["reasons"]
        assert result["checks"]["watermark"].get("claimed_record_id") is None


def test_container_changes_keep_the_record(client: TestClient, marked: tuple[dict, bytes]) -> None:
    body, data = marked
    assert data[:8] == b"\x89PNG\r\n\x1a\n"

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    iend = data.rindex(b"IEND") - 4
    text = chunk(b"tEXt", b"Comment\x00forwarded by a chat app")
    # Re-chunk IDAT: join every IDAT payload, split it again in 1000-byte chunks.
    chunks, position, idat = [], 8, b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        if kind == b"IDAT":
            idat += payload
            if data[position + 12 + length + 4 : position + 12 + length + 8] != b"IDAT":
                chunks.extend(chunk(b"IDAT", idat[i : i + 1000]) for i in range(0, len(idat), 1000))
        else:
            chunks.append(chunk(kind, payload))
        position += 12 + length
    stripped = encode(decode(data))  # the manifest and every chunk gone, the same pixels
    cases = {
        "byte appended": data + b"\x00",
        "text chunk": data[:iend] + text + data[iend:],
        "idat rechunked": data[:8] + b"".join(chunks),
        "manifest stripped": stripped,
    }
    for name, upload in cases.items():
        assert np.array_equal(decode(upload), decode(data)), name
        result = verify(client, upload)
        assert result["verdict"] == "modified" and result["record_id"] == body["record_id"], (name, result)
        assert result["modification"] == "container", (name, result)
        assert {e["kind"] for e in result["evidence"]} >= {"pixels"}, name
        assert result["origin"]["record_id"] == body["record_id"]


def test_local_edits_are_reported_with_their_boxes(client: TestClient) -> None:
    body, data = certify(client, photo("chelsea.png"), "chelsea.png", source_type="digitalCapture")
    pixels = decode(data)
    h, w = pixels.shape[:2]
    filled = pixels.copy()
    filled[100:160, 200:260] = (40, 200, 90)  # a 60x60 flat fill
    logo = pixels.copy()
    yy, xx = np.mgrid[0:64, 0:64]
    logo[200:264, 300:364] = np.stack([(xx * 4) % 256, (yy * 4) % 256, ((xx + yy) * 2) % 256], -1)
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (180, 150), 35, 255, -1)  # the cat's eye region, erased
    erased = cv2.inpaint(pixels, mask, 5, cv2.INPAINT_TELEA)
    cases = {"fill": (filled, (200, 100, 260, 160)), "logo": (logo, (300, 200, 364, 264)),
             "erase": (erased, (145, 115, 215, 185))}  # fmt: skip
    for name, (edited, (x0, y0, x1, y1)) in cases.items():
        result = verify(client, encode(edited, "JPEG", quality=90))
        assert result["verdict"] == "modified" and result["record_id"] == body["record_id"], (name, result)
        assert result["modification"] == "edited", (name, result)
        boxes = [r["box"] for r in result["edited_regions"]]
        overlaps = [not (b[2] <= x0 or b[0] >= x1 or b[3] <= y0 or b[1] >= y1) for b in boxes]
        assert any(overlaps), (name, boxes)
        assert "edit" in result["summary"].lower() or "changed locally" in result["summary"]
    half = cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    for name, copy in {"jpeg 50": encode(pixels, "JPEG", quality=50), "resize 0.5": encode(half)}.items():
        result = verify(client, copy)
        assert result["record_id"] == body["record_id"], (name, result)
        assert result["modification"] == "transformed" and result["edited_regions"] == [], (name, result)


def test_a_region_pasted_into_another_picture_is_a_composite(client: TestClient) -> None:
    body, data = certify(client, photo("coffee.png"), "coffee.png", source_type="digitalCapture")
    pixels = decode(data)
    host = cv2.resize(hosts("coffee.png")[4], (900, 700), interpolation=cv2.INTER_CUBIC)
    host[180:500, 300:700] = pixels[40:360, 100:500]  # 400x320 of the record inside another picture
    result = verify(client, encode(host, "JPEG", quality=92))
    assert result["record_id"] == body["record_id"], result
    assert result["modification"] == "composite", result
    box = result["contained_region"]["box"]
    # The box is found to within the 32-pixel blocks the search works in (one block of margin on each side).
    assert box[0] <= 300 + 8 and box[1] <= 180 + 8 and box[2] >= 700 - 8 and box[3] >= 500 - 8, box
    assert box[0] >= 300 - 72 and box[1] >= 180 - 72 and box[2] <= 700 + 72 and box[3] <= 500 + 72, box
    assert 0.15 < result["contained_region"]["share"] < 0.35
    assert any(c.startswith("contains a region of record") for c in result["changes"])
    assert not any(c.startswith("cropped") for c in result["changes"])


def _account_client(services: Services, client: TestClient, name: str) -> dict[str, str]:
    account = services.accounts.ensure_account(name)
    _, key = services.accounts.create_key(account.id, ["certify", "mint", "verify"], name=name)
    return {"Authorization": f"Bearer {key}"}


def test_laundering_is_refused_and_derivatives_are_declared(client: TestClient, services: Services) -> None:
    alice = _account_client(services, client, "alice-launder")
    bob = _account_client(services, client, "bob-launder")
    original = photo("motorcycle_left.png")
    response = client.post("/v1/certify", files={"file": ("m.png", encode(original))}, headers=alice,
                           data={"source_type": "digitalCapture"})  # fmt: skip
    assert response.status_code == 201, response.text
    first = response.json()
    wait_for(lambda: client.get(f"/v1/records/{first['record_id']}").json()["status"] == "registered")
    certified = client.get(f"/v1/records/{first['record_id']}/image").content
    pixels = decode(certified)
    half = cv2.resize(pixels, (pixels.shape[1] // 2, pixels.shape[0] // 2), interpolation=cv2.INTER_AREA)
    cropped = np.ascontiguousarray(pixels[40:-40, 60:-20][:, ::-1])
    for copy in (certified, encode(pixels, "JPEG", quality=85), encode(half), encode(cropped, "JPEG", quality=90)):
        refused = client.post("/v1/certify", files={"file": ("copy", copy)}, headers=bob)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "already_certified" and refused.json()["record_id"] == first["record_id"]
    # The owner may certify its own work again.
    again = client.post("/v1/certify", files={"file": ("again.png", certified)}, headers=alice)
    assert again.status_code == 201, again.text
    # A declared derivative is accepted, keeps its source, and names the source's account as the origin.
    edited = decode(certified).copy()
    edited[20:80, 20:80] = 255
    derived = client.post("/v1/certify", files={"file": ("derived.png", encode(edited))}, headers=bob,
                          data={"derived_from": first["record_id"]})  # fmt: skip
    assert derived.status_code == 201, derived.text
    record = client.get(f"/v1/records/{derived.json()['record_id']}").json()
    assert record["derived_from"] == first["record_id"] and record["source_type"] is None
    wait_for(lambda: client.get(f"/v1/records/{derived.json()['record_id']}").json()["status"] == "registered")
    derived_bytes = client.get(f"/v1/records/{derived.json()['record_id']}/image").content
    result = verify(client, derived_bytes)
    assert result["verdict"] == "authentic" and result["record_id"] == derived.json()["record_id"]
    assert result["origin"] == {"record_id": first["record_id"], "account": "alice-launder", "derived": True}
    ingredients = result["checks"]["c2pa"].get("ingredients") or []
    assert any(i.get("relationship") == "parentOf" for i in ingredients), ingredients
    original_result = verify(client, certified)
    assert original_result["origin"]["account"] == "alice-launder" and not original_result["origin"]["derived"]
    # Minting the derivative would sell Alice's work: refused.
    address = "0x" + "11" * 20
    minted = client.post("/v1/nft/mint", json={"record_id": derived.json()["record_id"], "to": address}, headers=bob)
    assert minted.status_code == 403 and minted.json()["error"] == "derivative_of_another_account", minted.text
    # A derivative of an unknown record is a clear 422.
    unknown = client.post("/v1/certify", files={"file": ("x.png", encode(edited))}, headers=bob,
                          data={"derived_from": "0" * 32})  # fmt: skip
    assert unknown.status_code == 422 and unknown.json()["error"] == "invalid_derivative"


def test_source_type_is_the_callers_claim(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    picture = cv2.resize(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (320, 320), interpolation=cv2.INTER_CUBIC)
    stated = client.post("/v1/certify", files={"file": ("a.png", encode(picture))},
                         data={"source_type": "trainedAlgorithmicMedia"}).json()  # fmt: skip
    assert client.get(f"/v1/records/{stated['record_id']}").json()["source_type"] == "trainedAlgorithmicMedia"
    unstated = client.post("/v1/certify", files={"file": ("b.png", encode(picture[::-1].copy()))}).json()
    assert client.get(f"/v1/records/{unstated['record_id']}").json()["source_type"] is None
    bad = client.post("/v1/certify", files={"file": ("c.png", encode(picture))}, data={"source_type": "madeUp"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_source_type"


def test_marks_made_before_keyed_layouts_still_read(client: TestClient, services: Services) -> None:
    """Records certified with the library's layout (before keyed layouts) keep being found, and only as such."""
    import copy

    from provenance.marks.watermark import LEGACY_LAYOUT, Watermarker

    current = services.verifier.watermarker
    assert current is not None
    old_style = copy.copy(services.certifier)
    old_style.watermarker = Watermarker(current.key.legacy())
    picture = hosts("astronaut.png")[7]
    record = old_style.certify(encode(picture), CertifyOptions(source_type="digitalCapture")).record
    services.repository.set_status(record.id, record.status, mark_layout=LEGACY_LAYOUT)  # as migration 0007 marks them
    stored = services.repository.get(record.id)
    assert stored is not None and stored.mark_layout == LEGACY_LAYOUT
    copy_bytes = encode(decode(services.store.cat(record.cid)), "JPEG", quality=85)
    legacy_before = current.legacy
    try:
        current.legacy = True
        result = verify(client, copy_bytes)
        assert result["record_id"] == record.id and result["verdict"] == "modified", result
        assert result["checks"]["watermark"]["record_id"] == record.id
        current.legacy = False  # the blind read no longer tries the old layout; the fingerprint path still confirms
        result = verify(client, copy_bytes)
        assert result["record_id"] == record.id, result
        assert result["checks"]["fingerprint"]["record_id"] == record.id
    finally:
        current.legacy = legacy_before
