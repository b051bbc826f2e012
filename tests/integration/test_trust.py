"""The trust model, tried as an attacker would: forged bundles, revoked keys, borrowed record ids and marks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from provenance.chain.admin import RegistryAdmin
from provenance.chain.artifacts import load_artifact
from provenance.chain.registry import REGISTRY
from provenance.chain.transactions import TxSender
from provenance.config import Settings
from provenance.db.models import Record
from provenance.ipfs.unixfs import compute_cid
from provenance.manifests.manifest import ManifestContent, ManifestSigner
from provenance.manifests.pki import load_or_create
from provenance.marks.watermark import MarkKey, embed
from provenance.runtime.services import Services
from provenance.signing import KeyStore, sha256_hex
from provenance.trust.document import TrustDocument, TrustRoot, certificate_fingerprint, split_certificates
from provenance.verify.bundle import build_bundle, verify_with_bundle
from tests.conftest import decode, encode, photo, wait_for

CLI = [sys.executable, "-m", "provenance.cli"]


def certify_registered(client: TestClient, rgb_name: str, fmt: str = "PNG") -> tuple[dict, bytes, dict]:
    body = client.post("/v1/certify", files={"file": (f"x.{fmt.lower()}", encode(photo(rgb_name), fmt))}).json()
    wait_for(lambda: client.get(f"/v1/records/{body['record_id']}").json()["status"] == "registered")
    data = client.get(f"/v1/records/{body['record_id']}/image").content
    bundle = client.get(f"/v1/records/{body['record_id']}/bundle").json()
    return body, data, bundle


def forge_bundle(services: Services, tmp_path: Path) -> tuple[bytes, dict, str]:
    """What an attacker can make with no secret of the service: their own registry, key, CA and image.

    The forgery is internally consistent: the attacker's registry lists the attacker's key and CA, so
    only the pin tells it apart from the real thing.
    """
    w3 = services.chain.registry.w3
    attacker = Account.create()
    w3.provider.make_request("anvil_setBalance", [attacker.address, hex(10**21)])  # type: ignore[arg-type]
    sender = TxSender(w3, attacker)
    registry_address, _ = sender.deploy(load_artifact(REGISTRY), attacker.address, attacker.address)
    admin = RegistryAdmin(w3, registry_address, None, attacker, sender=sender)
    ecdsa = KeyStore(tmp_path / "attacker-keys").active()
    c2pa = load_or_create(tmp_path / "attacker-ca")
    admin.publish_key(ecdsa.key_id)
    for cert in split_certificates(c2pa.trust_anchors_pem):
        admin.add_trust_anchor(certificate_fingerprint(cert))
    record_id = "f0" * 16
    signed = ManifestSigner(c2pa).sign(
        encode(photo("rocket.jpg")), "image/png", ManifestContent(record_id=record_id, title="forged")
    )
    tx_hash, block = sender.call_and_wait(
        w3.eth.contract(address=registry_address, abi=load_artifact(REGISTRY)["abi"]).functions.register(
            bytes.fromhex(sha256_hex(signed)), compute_cid(signed)
        )
    )
    record = Record(
        id=record_id,
        sha256=sha256_hex(signed),
        cid=compute_cid(signed),
        signature=ecdsa.sign(signed),
        key_id=ecdsa.key_id,
        media_type="image/png",
        watermark_id=None,
        tx_hash=tx_hash,
        block_number=block,
    )
    bundle = build_bundle(
        record,
        public_key_pem=ecdsa.public_key_pem,
        credentials=c2pa,
        chain_id=services.chain.registry.chain_id,
        registry_address=registry_address,
        batch=None,
    )
    return signed, json.loads(json.dumps(bundle)), registry_address


def test_self_made_bundle_is_untrusted_and_the_genuine_one_authentic(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    rpc = services.chain.registry.rpc_url
    pin = TrustRoot.of(services.chain.registry.address, services.chain.registry.chain_id)
    _, data, bundle = certify_registered(client, "astronaut.png")
    genuine = verify_with_bundle(data, bundle, rpc, pin=pin)
    assert genuine.verdict == "authentic", genuine.reasons
    assert genuine.checks["chain"]["registrant_was_writer"] and genuine.checks["chain"]["key_valid_at_registration"]
    assert genuine.checks["c2pa"]["trusted"] and genuine.checks["c2pa"]["anchors_published"]

    forged_data, forged, attacker_registry = forge_bundle(services, tmp_path)
    report = verify_with_bundle(forged_data, forged, rpc, pin=pin)
    assert report.verdict == "untrusted" and report.exit_code != 0
    assert any(attacker_registry in r and "not the pinned" in r for r in report.reasons)
    # Against its own registry the forgery holds together: what makes it fail is only the pin.
    assert verify_with_bundle(forged_data, forged, rpc, pin=TrustRoot.of(attacker_registry)).verdict == "authentic"

    # Pointing the forged bundle at the real registry does not help: nothing of it is published there.
    forged["chain"]["registry_address"] = services.chain.registry.address
    report = verify_with_bundle(forged_data, forged, rpc, pin=pin)
    assert report.verdict in ("invalid", "untrusted") and report.verdict != "authentic"
    assert any("not registered" in r for r in report.reasons)

    # Nothing pinned: never authentic, and the report says what to pin.
    unpinned = verify_with_bundle(data, bundle, rpc)
    assert unpinned.verdict == "untrusted" and any("--registry" in r for r in unpinned.reasons)


def test_stranger_manifest_naming_a_real_record_is_invalid_and_names_nothing(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    body, _, _ = certify_registered(client, "coffee.png")
    stranger = load_or_create(tmp_path / "stranger-ca")
    claim = ManifestContent(record_id=body["record_id"], watermark_id=body["watermark_id"])
    forged = ManifestSigner(stranger).sign(encode(photo("chelsea.png")), "image/png", claim)
    result = client.post("/v1/verify", files={"file": ("f.png", forged)}).json()
    assert result["verdict"] == "invalid" and result["record_id"] is None
    assert any(body["record_id"] in r and "not trusted" in r for r in result["reasons"])
    assert result["checks"]["c2pa"]["record_id"] is None
    assert result["checks"]["c2pa"]["claimed_record_id"] == body["record_id"]
    assert result["evidence"] == []

    # A stranger's manifest that claims nothing of ours does not make an image invalid, nor ours.
    own = ManifestSigner(stranger).sign(encode(photo("rocket.jpg")), "image/png", ManifestContent(record_id="theirs"))
    result = client.post("/v1/verify", files={"file": ("o.png", own)}).json()
    assert result["verdict"] == "unknown" and result["record_id"] is None


def test_public_watermark_id_cannot_forge_a_mark(client: TestClient, services: Services) -> None:
    body, data, _ = certify_registered(client, "motorcycle_left.png")
    # The attacker knows the public id and the algorithm, not the mark key.
    forged = embed(photo("astronaut.png"), body["watermark_id"], MarkKey.generate())
    result = client.post("/v1/verify", files={"file": ("w.png", encode(forged))}).json()
    assert result["verdict"] == "unknown" and result["record_id"] is None

    # The genuine mark on a re-encoded copy leads to the record, and says how strong that is.
    copy = encode(decode(data), "JPEG", quality=85)
    result = client.post("/v1/verify", files={"file": ("c.jpg", copy)}).json()
    assert result["verdict"] == "modified" and result["record_id"] == body["record_id"]
    # The mark proposes the record; the content, checked against the certified original, binds it.
    content, item = result["evidence"]
    assert content["kind"] == "content" and content["strength"] == "strong"
    assert item["kind"] == "watermark" and item["strength"] == "probabilistic"
    assert 0 < item["false_positive_probability"] < 1e-4
    assert any("keyed watermark names the record" in r for r in result["reasons"])
    assert result["modification"] == "transformed"


def test_exact_copy_lists_conclusive_evidence(client: TestClient) -> None:
    _, data, _ = certify_registered(client, "chelsea.png")
    result = client.post("/v1/verify", files={"file": ("e.png", data)}).json()
    assert result["verdict"] == "authentic"
    assert [e["kind"] for e in result["evidence"]] == ["exact_hash", "c2pa_manifest", "watermark"]
    assert result["evidence"][0]["strength"] == "conclusive" and result["summary"]
    assert result["checks"]["chain"]["key_valid"] is True


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A separate stack, so rotating and revoking keys does not disturb the shared one."""
    opened = Services.open(Settings(data_dir=tmp_path_factory.mktemp("rotate")), start_worker=False)
    yield opened
    opened.close()


def test_revoked_key_is_not_authentic_and_rotation_is_on_chain(rotating: Services) -> None:
    from provenance.api.app import create_app
    from provenance.trust.admin import rotate_signing_key

    services = rotating
    rpc, registry = services.chain.registry.rpc_url, services.chain.registry
    pin = TrustRoot.of(registry.address, registry.chain_id)
    first = services.keys.active().key_id
    assert registry.key_status(first).published

    before = services.certifier.certify(encode(photo("astronaut.png")))  # registered before the revocation
    services.anchorer.run_once()
    late = services.certifier.certify(encode(photo("coffee.png")))  # signed with the old key, registered after
    rotated = rotate_signing_key(services.chain.admin, services.keys, services.repository, revoke_previous=True)
    assert rotated.key_id != first and services.keys.active().key_id == rotated.key_id
    status = registry.key_status(first)
    assert status.published and status.revoked_at is not None
    assert registry.key_status(rotated.key_id).published
    services.anchorer.run_once()
    # No worker runs here: each poll is an anchoring pass, so a receipt not ready on the first pass is read on a later
    # one (on a loaded machine, anvil's receipt can lag the submission by more than one pass).
    wait_for(lambda: (services.anchorer.run_once(), services.repository.get(late.record.id).status)[1] == "registered")

    with TestClient(create_app(services=services)) as local:
        doc = TrustDocument.from_json(local.get("/.well-known/provenance-trust.json").content)
        bundle_before = local.get(f"/v1/records/{before.record.id}/bundle").json()
        bundle_late = local.get(f"/v1/records/{late.record.id}/bundle").json()
    keys = {k.key_id: k for k in doc.signing_keys}
    assert keys[rotated.key_id].active and keys[rotated.key_id].published
    assert keys[first].revoked_at_block == status.revoked_at
    assert all(a.published for a in doc.c2pa_trust_anchors) and doc.owner and doc.writers

    assert verify_with_bundle(before.data, bundle_before, rpc, pin=pin).verdict == "authentic"
    report = verify_with_bundle(late.data, bundle_late, rpc, trust=doc)
    assert report.verdict == "untrusted" and any("was not valid at the registration block" in r for r in report.reasons)
    # The service's own verify agrees: the key was revoked before that registration.
    assert services.verifier.verify(late.data).verdict == "invalid"
    # A newly signed record uses the new key, published before it was ever used.
    fresh = services.certifier.certify(encode(photo("chelsea.png")))
    assert fresh.record.key_id == rotated.key_id


def test_cli_pins_and_exit_codes(client: TestClient, services: Services, tmp_path: Path) -> None:
    _, data, bundle = certify_registered(client, "rocket.jpg", "JPEG")
    image, bundle_path, trust_path = tmp_path / "img.jpg", tmp_path / "bundle.json", tmp_path / "trust.json"
    image.write_bytes(data)
    bundle_path.write_text(json.dumps(bundle))
    trust_path.write_bytes(client.get("/.well-known/provenance-trust.json").content)
    rpc, address = services.chain.registry.rpc_url, services.chain.registry.address

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*CLI, "verify", str(image), "--bundle", str(bundle_path), "--rpc", rpc, *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    unpinned = run()
    assert unpinned.returncode == 1 and "untrusted" in unpinned.stdout and "--registry" in unpinned.stdout
    assert json.loads(run("--json").stdout)["verdict"] == "untrusted" and run("--json").returncode == 1
    pinned = run("--registry", address)
    assert pinned.returncode == 0 and "authentic" in pinned.stdout, pinned.stdout + pinned.stderr
    with_doc = run("--trust", str(trust_path), "--json")
    assert with_doc.returncode == 0 and json.loads(with_doc.stdout)["verdict"] == "authentic"
    other = run("--registry", "0x" + "11" * 20, "--json")
    assert other.returncode == 1 and json.loads(other.stdout)["verdict"] == "untrusted"
    bad = run("--registry", "not-an-address")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_trust_export_matches_the_well_known_document(client: TestClient, services: Services, tmp_path: Path) -> None:
    served = TrustDocument.from_json(client.get("/.well-known/provenance-trust.json").content)
    out = tmp_path / "trust.json"
    data_dir = str(services.settings.resolved_data_dir)
    result = subprocess.run(
        [*CLI, "trust", "export", "--data-dir", data_dir, "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    exported = TrustDocument.from_file(out)
    assert exported.pin() == served.pin() and exported.chain_id == 31337
    assert {k.key_id for k in exported.signing_keys} == {k.key_id for k in served.signing_keys}
    assert [a.sha256 for a in exported.c2pa_trust_anchors] == [a.sha256 for a in served.c2pa_trust_anchors]
    assert "PRIVATE" not in out.read_text()
