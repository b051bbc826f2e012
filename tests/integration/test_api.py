"""The HTTP API end to end on the embedded stack: certify, records, verify, keys, chain, gateway."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from provenance.db.models import RecordStatus
from provenance.runtime.services import Services
from tests.conftest import SKIMAGE_DATA, decode, encode, photo, wait_for
from tests.unit.test_media import png_header_only


def certify(client: TestClient, data: bytes, name: str = "image.png", **form: str) -> dict:
    response = client.post("/v1/certify", files={"file": (name, data)}, data=form)
    assert response.status_code == 201, response.text
    return response.json()


def registered(client: TestClient, record_id: str) -> dict:
    def check() -> dict | None:
        record = client.get(f"/v1/records/{record_id}").json()
        return record if record["status"] == RecordStatus.REGISTERED else None

    return wait_for(check)


def verify(client: TestClient, data: bytes) -> dict:
    response = client.post("/v1/verify", files={"file": ("upload", data)})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def certified_png(client: TestClient) -> dict:
    body = certify(client, encode(photo("astronaut.png")), "astronaut.png")
    body["bytes"] = client.get(f"/v1/records/{body['record_id']}/image").content
    body["record"] = registered(client, body["record_id"])
    return body


def test_certify_returns_every_field(certified_png: dict) -> None:
    assert set(certified_png) >= {
        "record_id",
        "sha256",
        "cid",
        "signature",
        "key_id",
        "watermark_id",
        "status",
        "image_url",
    }
    assert certified_png["image_url"].endswith(f"/v1/records/{certified_png['record_id']}/image")
    assert hashlib.sha256(certified_png["bytes"]).hexdigest() == certified_png["sha256"]
    assert certified_png["watermark_id"] is not None


def test_a_certified_photo_has_no_lineage(client: TestClient, certified_png: dict) -> None:
    response = client.get(f"/v1/records/{certified_png['record_id']}/lineage")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert client.get("/v1/records/" + "0" * 32 + "/lineage").status_code == 404


def test_record_carries_chain_status(certified_png: dict) -> None:
    record = certified_png["record"]
    assert record["tx_hash"].startswith("0x") and len(record["tx_hash"]) == 66
    assert record["block_number"] > 0 and record["chain_id"] == 31337
    for stamp in (record["created_at"], record["registered_at"]):  # UTC with its zone, as date-time requires
        assert stamp.endswith("Z") or stamp.endswith("+00:00"), stamp


def test_exact_copy_is_authentic(client: TestClient, certified_png: dict) -> None:
    result = verify(client, certified_png["bytes"])
    assert result["verdict"] == "authentic" and result["record_id"] == certified_png["record_id"]
    checks = result["checks"]
    assert checks["c2pa"]["present"] and checks["c2pa"]["valid"] and checks["c2pa"]["trusted"]
    assert checks["exact"]["matched"] and checks["exact"]["signature_valid"]
    assert checks["watermark"]["detected"] and checks["watermark"]["watermark_id"] == certified_png["watermark_id"]
    assert checks["chain"]["registered"] and checks["chain"]["block_number"] == certified_png["record"]["block_number"]
    assert checks["ipfs"] == {"cid": certified_png["cid"], "pinned": True, "store": "embedded blockstore"}


def test_jpeg_75_copy_is_modified_and_names_the_original(client: TestClient, certified_png: dict) -> None:
    copy = encode(decode(certified_png["bytes"]), "JPEG", quality=75)
    result = verify(client, copy)
    assert result["verdict"] == "modified" and result["record_id"] == certified_png["record_id"]
    assert not result["checks"]["c2pa"]["present"] and not result["checks"]["exact"]["matched"]
    assert result["checks"]["watermark"]["record_id"] == certified_png["record_id"]
    assert result["checks"]["chain"]["registered"]  # what the chain says about the original


def test_half_size_copy_is_modified(client: TestClient, certified_png: dict) -> None:
    rgb = decode(certified_png["bytes"])
    half = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    result = verify(client, encode(half))
    assert result["verdict"] == "modified" and result["record_id"] == certified_png["record_id"]


def test_tampered_manifest_is_invalid(client: TestClient) -> None:
    body = certify(client, encode(photo("coffee.png"), "JPEG", quality=92), "coffee.jpg")
    data = bytearray(client.get(f"/v1/records/{body['record_id']}/image").content)
    data[-500] ^= 0x55  # inside the entropy-coded pixels: still a JPEG, hash no longer matches
    result = verify(client, bytes(data))
    assert result["verdict"] == "invalid"
    assert any("mismatch" in f for f in result["checks"]["c2pa"]["failures"])


def test_bad_record_signature_is_invalid(client: TestClient, services: Services, certified_png: dict) -> None:
    body = certify(client, encode(photo("chelsea.png")), "chelsea.png")
    data = client.get(f"/v1/records/{body['record_id']}/image").content
    services.repository.set_status(body["record_id"], body["status"], signature=certified_png["signature"])
    result = verify(client, data)
    assert result["verdict"] == "invalid" and result["checks"]["exact"]["signature_valid"] is False


def test_uncertified_photos_are_unknown(client: TestClient) -> None:
    result = verify(client, (SKIMAGE_DATA / "rocket.jpg").read_bytes())
    assert result["verdict"] == "unknown" and result["record_id"] is None
    assert not result["checks"]["chain"]["registered"] and not result["checks"]["ipfs"]["pinned"]


def unrelated_images(count: int) -> Iterator[bytes]:
    """Crops, flips, tints and synthetic patterns: none of them ever certified."""
    rng = np.random.default_rng(2026)
    sources = [photo(n) for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")]
    for i in range(count):
        kind = i % 4
        if kind == 3:
            h, w = rng.integers(256, 480, 2)
            yy, xx = np.mgrid[0:h, 0:w]
            rgb = np.stack(
                [
                    (xx * rng.uniform(0.2, 2) + yy * rng.uniform(0, 1)) % 256,
                    (yy * rng.uniform(0.2, 2)) % 256,
                    rng.integers(0, 256, (h, w)),
                ],
                axis=-1,
            ).astype(np.uint8)
        else:
            src = sources[i % len(sources)]
            h = int(rng.integers(256, src.shape[0] + 1))
            w = int(rng.integers(256, src.shape[1] + 1))
            y, x = int(rng.integers(0, src.shape[0] - h + 1)), int(rng.integers(0, src.shape[1] - w + 1))
            rgb = src[y : y + h, x : x + w]
            if kind == 1:
                rgb = rgb[:, ::-1]
            if kind == 2:
                rgb = np.clip(rgb * rng.uniform(0.6, 1.3, 3), 0, 255).astype(np.uint8)
        fmt = ("PNG", "JPEG", "WEBP")[i % 3]
        yield encode(np.ascontiguousarray(rgb), fmt, **({"quality": 85} if fmt != "PNG" else {}))


def test_two_hundred_unrelated_images_are_all_unknown(client: TestClient) -> None:
    verdicts = [verify(client, data)["verdict"] for data in unrelated_images(200)]
    assert len(verdicts) == 200 and set(verdicts) == {"unknown"}


def test_small_image_is_certified_without_a_mark(client: TestClient) -> None:
    body = certify(client, encode(photo("coffee.png")[:120, :160]), "small.png", source_type="digitalArt")
    assert body["watermark_id"] is None and body["watermarked"] is False
    record = registered(client, body["record_id"])
    assert "too small" in record["watermark_note"] and record["source_type"] == "digitalArt"
    result = verify(client, client.get(f"/v1/records/{body['record_id']}/image").content)
    assert result["verdict"] == "authentic" and not result["checks"]["watermark"]["detected"]
    assert result["checks"]["c2pa"]["summary"]["actions"][0]["digitalSourceType"].endswith("/digitalArt")


def _state(services: Services) -> tuple[dict, set]:
    pins = {p.name for p in (services.settings.resolved_data_dir / "ipfs" / "pins").iterdir()}
    return services.repository.counts(), pins


@pytest.mark.parametrize(
    "data,form,status,code",
    [
        (b"definitely not an image", {}, 415, "unsupported_media_type"),
        (b"", {}, 415, "unsupported_media_type"),
        (png_header_only(60_000, 60_000), {}, 413, "too_many_pixels"),
        (encode(photo("coffee.png"))[:5000], {}, 422, "corrupt_image"),
        (encode(photo("coffee.png")), {"source_type": "photoshopped"}, 422, "invalid_source_type"),
    ],
)
def test_bad_input_is_a_json_4xx_and_writes_nothing(
    client: TestClient, services: Services, data: bytes, form: dict, status: int, code: str
) -> None:
    before = _state(services)
    response = client.post("/v1/certify", files={"file": ("x", data)}, data=form)
    assert response.status_code == status and response.json()["error"] == code and response.json()["detail"]
    assert _state(services) == before


def test_missing_file_and_oversized_upload(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = client.post("/v1/certify", data={"source_type": "digitalArt"})  # `file` is required (OpenAPI too)
    assert response.status_code == 422 and response.json()["error"] == "validation_error"
    assert "file" in str(response.json()["detail"])
    monkeypatch.setattr(services.settings, "max_upload_bytes", 1000)
    response = client.post("/v1/verify", files={"file": ("big.png", encode(photo("coffee.png")))})
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_database_failure_unpins_what_was_pinned(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _state(services)

    def broken(record: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(services.repository, "add", broken)
    local = TestClient(client.app, raise_server_exceptions=False, headers=dict(client.headers))
    response = local.post("/v1/certify", files={"file": ("a.png", encode(photo("rocket.jpg")))})
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    assert _state(services) == before


def test_keys_rotate_and_old_records_still_verify(client: TestClient, services: Services, certified_png: dict) -> None:
    from provenance.trust.admin import rotate_signing_key

    old_key = certified_png["key_id"]
    # Published on the registry first, then active.
    rotate_signing_key(services.chain.admin, services.keys, services.repository)
    body = certify(client, encode(photo("motorcycle_left.png")), "moto.png")
    assert body["key_id"] != old_key
    listed = {k["key_id"]: k for k in client.get("/v1/keys").json()["signing_keys"]}
    assert listed[old_key]["records_signed"] >= 1 and not listed[old_key]["active"]
    assert listed[body["key_id"]]["active"] and "BEGIN PUBLIC KEY" in listed[old_key]["public_key_pem"]
    assert verify(client, certified_png["bytes"])["verdict"] == "authentic"
    assert services.chain.registry.key_status(body["key_id"]).published
    keys = client.get("/v1/keys").json()
    assert "BEGIN CERTIFICATE" in keys["c2pa"]["root_certificate_pem"]
    assert "PRIVATE" not in str(keys)


def test_chain_endpoint(client: TestClient, services: Services) -> None:
    body = client.get("/v1/chain").json()
    assert body["chain_id"] == 31337 and body["rpc_url"].startswith("http://127.0.0.1:")
    assert {f["name"] for f in body["registry_abi"] if f.get("type") == "function"} >= {"register", "lookup"}
    assert len(services.chain.registry.w3.eth.get_code(body["registry_address"])) > 0


def test_gateway_serves_pinned_files(client: TestClient, certified_png: dict) -> None:
    response = client.get(f"/ipfs/{certified_png['cid']}")
    assert response.status_code == 200 and response.content == certified_png["bytes"]
    assert response.headers["content-type"] == "image/png"
    assert client.get("/ipfs/not-a-cid").json()["error"] == "bad_request"
    missing = client.get("/ipfs/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_unknown_record_health_and_docs(client: TestClient) -> None:
    assert client.get("/v1/records/nope").json() == {"error": "not_found", "detail": "No record 'nope'."}
    assert client.get("/v1/records/nope/image").status_code == 404
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["chain"]["ok"] and health["database"] == "sqlite"
    assert client.get("/docs").status_code == 200
    assert "/v1/certify" in client.get("/openapi.json").json()["paths"]


def test_health_is_503_and_names_a_dead_chain(tmp_path: Path) -> None:
    from provenance.api.app import create_app
    from provenance.config import Settings

    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    try:
        with TestClient(create_app(services=services)) as local:
            assert local.get("/healthz").status_code == 200
            node = services.chain.node
            assert node is not None and node.process is not None
            node.supervise = False  # keep it down: the supervisor would start it again
            node.process.kill()  # the anvil this test started, by its process object
            node.process.wait(timeout=10)
            response = local.get("/healthz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "degraded" and body["down"] == ["chain"] and not body["chain"]["ok"]
            assert body["database_state"]["ok"] and body["ipfs_state"]["ok"]
    finally:
        services.close()
