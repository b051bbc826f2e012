"""Copies that travelled: crops, flips, rotations and heavy edits still find their original, and only it."""

from __future__ import annotations

import io

import cv2
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance

from tests.conftest import decode, encode, photo, wait_for


def certify(client: TestClient, rgb: np.ndarray, name: str) -> tuple[dict, np.ndarray]:
    body = client.post("/v1/certify", files={"file": (name, encode(rgb))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    return body, decode(client.get(f"/v1/records/{body['record_id']}/image").content)


def verify(client: TestClient, data: bytes) -> dict:
    response = client.post("/v1/verify", files={"file": ("upload", data)})
    assert response.status_code == 200, response.text
    return response.json()


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))


def test_crops_flips_and_rotations_find_the_original_and_show_the_changes(client: TestClient) -> None:
    body, certified = certify(client, photo("astronaut.png"), "astronaut.png")
    h, w = certified.shape[:2]
    rng = np.random.default_rng(8)
    y, x = int(rng.integers(0, h // 4)), int(rng.integers(0, w // 4))
    cases = {
        "cropped": encode(certified[y : y + int(h * 0.75), x : x + int(w * 0.75)]),
        "mirrored": encode(np.ascontiguousarray(certified[:, ::-1])),
        "rotated": encode(rotate(certified, 5)),
        "brightness": encode(np.asarray(ImageEnhance.Brightness(Image.fromarray(certified)).enhance(0.8)), "JPEG"),
    }
    for change, data in cases.items():
        result = verify(client, data)
        assert result["verdict"] == "modified" and result["record_id"] == body["record_id"], (change, result)
        assert any(change in c for c in result["changes"]), (change, result["changes"])
        kinds = {e["kind"]: e for e in result["evidence"]}
        assert kinds["watermark"]["false_positive_probability"] <= 1e-6  # per image, blind read or confirmation
        if change != "brightness":  # a brightness change alone leaves the mark readable without any lookup
            assert kinds["fingerprint"]["strength"] == "weak" and result["checks"]["fingerprint"]["record_id"]
        png = client.get(result["diff_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (w, h)
    assert client.get("/v1/verify/" + "0" * 32 + "/diff.png").status_code == 404


def test_two_records_of_one_scene_are_never_confused(client: TestClient) -> None:
    """The fingerprint cannot tell two certifications of the same picture apart; the keyed mark can."""
    scene = photo("coffee.png")
    first, first_pixels = certify(client, scene, "coffee-a.png")
    second, second_pixels = certify(client, scene, "coffee-b.png")
    assert first["watermark_id"] != second["watermark_id"]
    for body, pixels in ((first, first_pixels), (second, second_pixels)):
        h, w = pixels.shape[:2]
        cropped = pixels[h // 8 : h // 8 + int(h * 0.8), w // 6 : w // 6 + int(w * 0.8)]
        crop = encode(np.ascontiguousarray(cropped[:, ::-1]))  # cropped and mirrored
        result = verify(client, crop)
        assert result["verdict"] == "modified" and result["record_id"] == body["record_id"], result


def test_edits_that_paint_over_a_region_show_where(client: TestClient) -> None:
    body, certified = certify(client, photo("chelsea.png"), "chelsea.png")
    edited = certified.copy()
    edited[100:160, 200:300] = (255, 0, 255)  # a pasted block
    result = verify(client, encode(edited, "JPEG", quality=90))
    assert result["verdict"] == "modified" and result["record_id"] == body["record_id"]
    diff = np.asarray(Image.open(io.BytesIO(client.get(result["diff_url"]).content)).convert("RGB")).astype(int)
    inside, outside = diff[110:150, 210:290], diff[220:280, 20:100]
    redness = lambda a: float((a[..., 0] - a[..., 1:].mean(axis=-1)).mean())  # noqa: E731
    assert redness(inside) > redness(outside) + 40


def test_unrelated_images_name_no_record(client: TestClient) -> None:
    # Photos no test certifies (the others are certified somewhere in the session, so copies of them may match).
    for name in ("hubble_deep_field.jpg", "ihc.png", "retina.jpg", "grass.png"):
        rgb = photo(name)
        for data in (encode(rgb), encode(np.ascontiguousarray(rgb[:, ::-1])), encode(rotate(rgb, 3), "JPEG")):
            result = verify(client, data)
            assert result["record_id"] is None or result["evidence"][0]["kind"] == "exact_hash", result
            assert all(m.get("confirmed") is False for m in result["checks"]["fingerprint"].get("weak_matches", []))


def test_fingerprint_soft_binding_and_backfill(client: TestClient, services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from provenance.marks.fingerprint import ALG, Fingerprinter, backfill

    body, certified = certify(client, photo("motorcycle_right.png"), "moto-r.png")
    data = client.get(f"/v1/records/{body['record_id']}/image").content
    result = verify(client, data)
    bindings = {b["alg"]: b["value"] for b in result["checks"]["c2pa"]["summary"]["soft_bindings"]}
    assert bindings[ALG].startswith("ISCC:") and bindings[ALG] == Fingerprinter().compute(certified).iscc
    assert services.repository.fingerprints(body["record_id"]) is not None

    # A record certified without fingerprints (an older data dir) is found again once backfilled.
    from provenance.config import Settings
    from provenance.runtime.services import Services

    settings = Settings(data_dir=tmp_path / "old", fingerprint_enabled=False)
    old = Services.open(settings, start_worker=False)
    try:
        item = old.certifier.certify(encode(photo("coffee.png")))
        assert old.repository.fingerprints(item.record.id) is None
        assert backfill(old.repository, old.store, Fingerprinter()) == 1
        assert old.repository.fingerprints(item.record.id) is not None
        assert backfill(old.repository, old.store, Fingerprinter()) == 0
    finally:
        old.close()


def test_blind_rescalings_are_tried_only_toward_sizes_that_were_marked(client: TestClient) -> None:
    """A rescaled blind read helps only a copy of a whole original: it is not tried toward sizes nobody certified."""
    original = cv2.resize(photo("chelsea.png"), (794, 622), interpolation=cv2.INTER_AREA)
    half = cv2.resize(original, (397, 311), interpolation=cv2.INTER_AREA)
    before = verify(client, encode(half))["checks"]["watermark"]
    assert before["tries"] == 1 and not before["detected"]  # no marked record is 794x622, 596x467 or 529x415 yet
    body, certified = certify(client, original, "chelsea-794.png")
    copy = cv2.resize(certified, (397, 311), interpolation=cv2.INTER_AREA)
    result = verify(client, encode(copy))
    assert result["record_id"] == body["record_id"], result
    assert result["checks"]["watermark"]["tries"] >= 2  # the x2 read toward the new record's size is tried now


def test_a_tight_crop_the_first_fingerprint_look_misses_is_found_by_the_second(client: TestClient) -> None:
    """Noise-like pictures (a random-weight generator's) have many blobs of equal strength: the 160-pixel query
    can miss the stored codes of a tight crop; the second look, at finer scales, proposes the record."""
    from provenance.marks.fingerprint import MAX_DISTANCE, Fingerprinter

    fingerprinter = Fingerprinter()
    rng = np.random.default_rng(11)
    missed = None
    for picture_number in range(4):  # the first tight crop whose first look finds none of the stored codes
        noise = cv2.GaussianBlur(rng.normal(size=(512, 512, 3)).astype(np.float32), (0, 0), 2.0)
        picture = np.clip((noise - noise.mean()) / noise.std() * 40 + 128, 0, 255).astype(np.uint8)
        body, certified = certify(client, picture, f"noise-{picture_number}.png")
        stored = fingerprinter.compute(certified).codes
        for attempt in range(30):
            side = int(512 * (0.5, 0.25)[attempt % 2] ** 0.5)
            y, x = rng.integers(0, 512 - side, 2)
            copy = np.ascontiguousarray(certified[y : y + side, x : x + side])
            if np.bitwise_count(fingerprinter.query(copy).codes[:, None] ^ stored[None, :]).min() > MAX_DISTANCE:
                missed = body, copy
                break
        if missed:
            break
    assert missed is not None, "the first look found every crop: this test no longer tests the second look"
    body, copy = missed
    result = verify(client, encode(copy))
    assert result["record_id"] == body["record_id"] and result["verdict"] == "modified", result
    assert result["checks"]["fingerprint"]["candidates"][0]["confirmed"]
