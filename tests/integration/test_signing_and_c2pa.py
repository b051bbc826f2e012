"""Stages 3 and 4: the C2PA chain and manifest, and ECDSA signatures openssl accepts."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provenance.errors import InvalidSourceTypeError
from provenance.manifests import pki
from provenance.manifests.manifest import (
    GENERATED_SOURCE_TYPE,
    ManifestContent,
    ManifestReader,
    ManifestSigner,
    build_manifest_definition,
)
from provenance.signing import KeyStore, sha256_hex, verify_signature
from tests.conftest import encode, photo


def test_service_ca_makes_a_chain_c2pa_accepts(tmp_path: Path) -> None:
    creds = pki.load_or_create(tmp_path)
    chain = x509.load_pem_x509_certificates(creds.chain_pem)
    root = x509.load_pem_x509_certificate(creds.trust_anchors_pem)
    assert len(chain) == 1, "the root is not part of the signing chain"
    leaf = chain[0]
    assert leaf.version == x509.Version.v3
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert pki.DOCUMENT_SIGNING in ekus or ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert leaf.issuer == root.subject and root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in ("root-ca.key.pem", "signer.key.pem"):
        assert (tmp_path / key).stat().st_mode & 0o777 == 0o600
    assert pki.load_or_create(tmp_path).chain_pem == creds.chain_pem  # created once, then reused


def test_manifest_signed_read_back_trusted(tmp_path: Path) -> None:
    creds = pki.load_or_create(tmp_path)
    png = encode(photo("coffee.png"))
    content = ManifestContent(record_id="r1", watermark_id=7, source_type=GENERATED_SOURCE_TYPE)
    signed = ManifestSigner(creds).sign(png, "image/png", content)
    report = ManifestReader(creds).read(signed, "image/png")
    assert report.present and report.valid and report.trusted and report.record_id == "r1" and report.watermark_id == 7
    assert report.summary["claim_generator"] == ["provenance 0.1.0"]
    assert report.summary["actions"][0] == {
        "action": "c2pa.created",
        "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
    }
    untrusting = ManifestReader(pki.C2paCredentials(creds.chain_pem, creds.private_key_pem, b""))
    plain = untrusting.read(signed, "image/png")
    assert plain.valid and not plain.trusted
    assert not ManifestReader(creds).read(png, "image/png").present


def test_manifest_definition_has_soft_binding_and_source_type() -> None:
    definition = build_manifest_definition(
        ManifestContent(record_id="r", source_type="digitalCapture", watermark_id=5), "image/png"
    )
    labels = [a["label"] for a in definition["assertions"]]
    assert labels == ["c2pa.actions.v2", "org.provenance.record", "c2pa.soft-binding"]
    assert definition["assertions"][0]["data"]["actions"][0]["digitalSourceType"].endswith("/digitalCapture")
    assert base64.b64decode(definition["assertions"][2]["data"]["blocks"][0]["value"]) == (5).to_bytes(4, "big")
    with pytest.raises(InvalidSourceTypeError):
        build_manifest_definition(ManifestContent(record_id="r", source_type="madeUp"), "image/png")


def test_operator_chain_is_used_instead_of_the_service_ca(tmp_path: Path) -> None:
    pki.create_ca(tmp_path / "operator", organization="Example Newsroom")
    creds = pki.load_or_create(
        tmp_path / "service",
        chain_path=tmp_path / "operator" / "signer.chain.pem",
        key_path=tmp_path / "operator" / "signer.key.pem",
        extra_anchors_path=tmp_path / "operator" / "root-ca.cert.pem",
    )
    assert not (tmp_path / "service").exists()
    signed = ManifestSigner(creds).sign(encode(photo("coffee.png")), "image/png", ManifestContent(record_id="x"))
    report = ManifestReader(creds).read(signed, "image/png")
    assert report.trusted and report.summary["issuer"] == "Example Newsroom"


def test_signature_is_accepted_by_openssl(tmp_path: Path) -> None:
    key = KeyStore(tmp_path / "keys").active()
    data = encode(photo("coffee.png"))
    signature = key.sign(data)
    (tmp_path / "file.png").write_bytes(data)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(signature))
    (tmp_path / "pub.pem").write_text(key.public_key_pem)
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "file.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "Verified OK" in result.stdout
    assert verify_signature(key.public_key_pem, data, signature)
    assert not verify_signature(key.public_key_pem, data + b"x", signature)
    assert (
        len(key.key_id) == 64 and sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_keys_rotate_and_stay_private(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    first = store.active()
    second = store.rotate()
    assert store.active().key_id == second.key_id != first.key_id
    for pem in (tmp_path / "keys").glob("*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600


def test_a_rotation_by_another_process_is_picked_up(tmp_path: Path) -> None:
    server, cli = KeyStore(tmp_path / "keys"), KeyStore(tmp_path / "keys")
    first = server.active()
    assert server.active() is first, "loaded once, not per call"
    rotated = cli.rotate()
    assert server.active().key_id == rotated.key_id != first.key_id
