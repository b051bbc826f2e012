"""Provenance bundles and verification that needs no trust in the service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from provenance.api.app import create_app
from provenance.config import Settings
from provenance.errors import InputError
from provenance.ipfs.unixfs import compute_cid
from provenance.runtime.services import Services
from provenance.signing import KeyStore
from provenance.trust.document import TrustRoot
from provenance.verify.bundle import verify_with_bundle
from tests.conftest import decode, encode, photo, wait_for
from tests.integration.test_batches import small_images


def fetch_bundle(client: TestClient, record_id: str) -> tuple[dict, bytes, str]:
    response = client.get(f"/v1/records/{record_id}/bundle")
    assert response.status_code == 200
    return response.json(), response.content, response.headers["x-bundle-cid"]


def test_bundle_is_self_contained_and_pinned(client: TestClient) -> None:
    body = client.post("/v1/certify", files={"file": ("a.png", encode(photo("astronaut.png")))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    bundle, raw, cid = fetch_bundle(client, body["record_id"])
    assert bundle["sha256"] == body["sha256"] and bundle["signature"]["value"] == body["signature"]
    assert "BEGIN PUBLIC KEY" in bundle["signature"]["public_key_pem"]
    assert "BEGIN CERTIFICATE" in bundle["c2pa"]["trust_anchors_pem"] and "PRIVATE" not in raw.decode()
    assert bundle["chain"]["mode"] == "single" and bundle["chain"]["tx_hash"] and bundle["chain"]["chain_id"] == 31337
    assert cid == compute_cid(raw) and client.get(f"/ipfs/{cid}").content == raw
    assert client.get("/v1/records/nope/bundle").status_code == 404


def test_cli_verifies_with_only_the_bundle_and_an_rpc(client: TestClient, services: Services, tmp_path: Path) -> None:
    body = client.post("/v1/certify", files={"file": ("c.png", encode(photo("coffee.png")))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    image = tmp_path / "certified.png"
    image.write_bytes(client.get(f"/v1/records/{body['record_id']}/image").content)
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_bytes(fetch_bundle(client, body["record_id"])[1])
    rpc = services.chain.registry.rpc_url
    # A fresh working directory with no data dir: nothing of the service is reachable but the chain.
    cli = [sys.executable, "-m", "provenance.cli", "verify"]
    run = subprocess.run(
        [
            *cli,
            str(image),
            "--bundle",
            str(bundle_path),
            "--rpc",
            rpc,
            "--registry",
            services.chain.registry.address,
            "--json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["verdict"] == "authentic"
    assert all(check["ok"] for check in report["checks"].values())
    assert not (tmp_path / "data").exists(), "no data dir was created"

    other = tmp_path / "other.png"
    other.write_bytes(encode(decode(image.read_bytes())))  # same pixels, re-encoded: different bytes
    mismatch = subprocess.run(
        [*cli, str(other), "--bundle", str(bundle_path), "--rpc", rpc, "--registry", services.chain.registry.address],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert mismatch.returncode == 1 and "mismatch" in mismatch.stdout


def test_tampered_bundle_or_wrong_chain_fails(client: TestClient, services: Services, tmp_path: Path) -> None:
    body = client.post("/v1/certify", files={"file": ("m.png", encode(photo("motorcycle_left.png")))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    data = client.get(f"/v1/records/{body['record_id']}/image").content
    bundle = fetch_bundle(client, body["record_id"])[0]
    rpc = services.chain.registry.rpc_url
    pin = TrustRoot.of(services.chain.registry.address, 31337)
    assert verify_with_bundle(data, bundle, rpc, pin=pin).verdict == "authentic"

    forged_key = json.loads(json.dumps(bundle))
    import tempfile

    other_key = KeyStore(Path(tempfile.mkdtemp())).active()
    forged_key["signature"]["public_key_pem"] = other_key.public_key_pem
    report = verify_with_bundle(data, forged_key, rpc, pin=pin)
    assert report.verdict == "invalid" and not report.checks["signature"]["ok"]

    wrong_chain = json.loads(json.dumps(bundle))
    wrong_chain["chain"]["chain_id"] = 11155111
    report = verify_with_bundle(data, wrong_chain, rpc, pin=pin)
    assert report.verdict == "untrusted" and any("serves chain 31337" in r for r in report.reasons)

    with pytest.raises(InputError, match="Not a provenance bundle"):
        verify_with_bundle(data, {"format": "something else"}, rpc, pin=pin)
    with pytest.raises(InputError, match="incomplete"):
        verify_with_bundle(data, {"format": bundle["format"]}, rpc, pin=pin)


def test_batched_bundle_checks_the_proof_on_chain(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", anchor_mode="batch", batch_max_items=3, batch_max_seconds=60)
    services = Services.open(settings, start_worker=False)
    try:
        items = [services.certifier.certify(d) for d in small_images(3, seed=11)]
        services.anchorer.run_once()
        with TestClient(create_app(services=services)) as local:
            bundle = local.get(f"/v1/records/{items[2].record.id}/bundle").json()
        assert bundle["chain"]["mode"] == "batch" and bundle["chain"]["merkle"]["leaves_cid"]
        pin = TrustRoot.of(services.chain.registry.address)
        report = verify_with_bundle(items[2].data, bundle, services.chain.registry.rpc_url, pin=pin)
        assert report.verdict == "authentic" and report.checks["chain"]["proof_valid"]
        bad = json.loads(json.dumps(bundle))
        bad["chain"]["merkle"]["proof"] = [*bad["chain"]["merkle"]["proof"][::-1], "0x" + "00" * 32]
        report = verify_with_bundle(items[2].data, bad, services.chain.registry.rpc_url, pin=pin)
        assert report.verdict == "invalid" and not report.checks["chain"]["proof_valid"]
    finally:
        services.close()
