"""C2PA as the ecosystem expects: parent ingredients keep an upload's history, RFC 3161 time-stamps."""

from __future__ import annotations

import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from provenance.certify.certifier import CertifyOptions
from provenance.config import Settings
from provenance.errors import TimeStampError
from provenance.manifests import pki
from provenance.manifests.manifest import ManifestContent, ManifestReader, ManifestSigner
from provenance.manifests.tsa import LocalTimeStampAuthority, open_time_stamp_authority
from provenance.runtime.services import Services
from tests.conftest import encode, photo

FOREIGN_ORG = "Foreign Camera Co"


@pytest.fixture
def ours(tmp_path: Path) -> pki.C2paCredentials:
    return pki.load_or_create(tmp_path / "ours")


@pytest.fixture
def foreign(tmp_path: Path) -> pki.C2paCredentials:
    """A second, throwaway CA: the camera or editor the upload came from."""
    pki.create_ca(tmp_path / "foreign", organization=FOREIGN_ORG)
    return pki.load_or_create(tmp_path / "foreign")


@pytest.fixture
def tsa(tmp_path: Path, ours: pki.C2paCredentials) -> Iterator[str]:
    pki.issue_tsa_certificate(tmp_path / "ours")
    with LocalTimeStampAuthority(tmp_path / "ours") as authority:
        yield authority.url


def _foreign_upload(foreign: pki.C2paCredentials, fmt: str = "PNG") -> bytes:
    mime = f"image/{fmt.lower()}"
    return ManifestSigner(foreign).sign(
        encode(photo("chelsea.png"), fmt), mime, ManifestContent(record_id="camera-1", source_type="digitalCapture")
    )


def test_tsa_certificate_is_issued_by_the_root_with_critical_time_stamping_eku(tmp_path: Path) -> None:
    pki.load_or_create(tmp_path)
    pki.issue_tsa_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "tsa.cert.pem").read_bytes())
    root = x509.load_pem_x509_certificate((tmp_path / "root-ca.cert.pem").read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]  # RFC 3161 2.3: the only EKU
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(root)
    assert cert.not_valid_after_utc <= root.not_valid_after_utc
    assert (tmp_path / "tsa.key.pem").stat().st_mode & 0o777 == 0o600
    first = (tmp_path / "tsa.cert.pem").read_bytes()
    pki.issue_tsa_certificate(tmp_path)
    assert (tmp_path / "tsa.cert.pem").read_bytes() == first, "kept while valid and issued by the current root"

    # A new root (the CA was recreated) gets a TSA certificate of its own.
    pki.create_ca(tmp_path)
    pki.issue_tsa_certificate(tmp_path)
    renewed = x509.load_pem_x509_certificate((tmp_path / "tsa.cert.pem").read_bytes())
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "root-ca.cert.pem").read_bytes()))


def test_local_tsa_replies_openssl_verifies_with_unique_serials(tmp_path: Path, tsa: str) -> None:
    ca = tmp_path / "ours"
    (tmp_path / "data.bin").write_bytes(b"what gets stamped")
    subprocess.run(
        ["openssl", "ts", "-query", "-data", "data.bin", "-sha256", "-cert", "-out", "query.tsq"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    query = (tmp_path / "query.tsq").read_bytes()

    def post(body: bytes, content_type: str = "application/timestamp-query") -> bytes:
        request = urllib.request.Request(tsa, data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/timestamp-reply"
            return response.read()

    replies: list[bytes] = []
    threads = [threading.Thread(target=lambda: replies.append(post(query))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(replies) == 8
    serials = set()
    for i, reply in enumerate(replies):
        (tmp_path / f"reply{i}.tsr").write_bytes(reply)
        verified = subprocess.run(
            ["openssl", "ts", "-verify", "-in", f"reply{i}.tsr", "-queryfile", "query.tsq",
             "-CAfile", str(ca / "root-ca.cert.pem"), "-untrusted", str(ca / "tsa.cert.pem")],
            cwd=tmp_path, capture_output=True, text=True,
        )  # fmt: skip
        assert "Verification: OK" in verified.stdout, verified.stderr
        text = subprocess.run(
            ["openssl", "ts", "-reply", "-in", f"reply{i}.tsr", "-text"], cwd=tmp_path, capture_output=True, text=True
        ).stdout
        serials.add(next(line for line in text.splitlines() if line.startswith("Serial number")))
    assert len(serials) == 8, "concurrent requests must never share a serial number"

    with pytest.raises(urllib.error.HTTPError) as refused:
        post(query, content_type="text/plain")
    assert refused.value.code == 415
    # A malformed query gets an RFC 3161 answer too: a response whose status is a rejection.
    (tmp_path / "rejected.tsr").write_bytes(post(b"not a query"))
    text = subprocess.run(
        ["openssl", "ts", "-reply", "-in", "rejected.tsr", "-text"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert "Status: Rejected" in text, text


def test_manifest_time_stamp_is_validated_and_trusted(tmp_path: Path, ours: pki.C2paCredentials, tsa: str) -> None:
    png = encode(photo("coffee.png"))
    signed = ManifestSigner(ours, tsa_url=tsa).sign(png, "image/png", ManifestContent(record_id="r1"))
    report = ManifestReader(ours).read(signed, "image/png")
    assert report.valid and report.trusted
    stamp = report.time_stamp
    assert stamp["present"] and stamp["validated"] and stamp["trusted"] and stamp["time"], stamp
    assert report.as_dict()["time_stamp"] == stamp

    # Without the root as anchor the token still matches the signature, but its TSA is not trusted.
    untrusting = ManifestReader(pki.C2paCredentials(ours.chain_pem, ours.private_key_pem, b"")).read(
        signed, "image/png"
    )
    assert untrusting.time_stamp["validated"] and not untrusting.time_stamp["trusted"]
    assert "timeStamp.untrusted" in untrusting.time_stamp["codes"]

    plain = ManifestReader(ours).read(ManifestSigner(ours).sign(png, "image/png", ManifestContent("r2")), "image/png")
    assert plain.time_stamp == {"present": False, "validated": False, "trusted": False, "time": None, "codes": []}


def test_a_tsa_that_does_not_answer_fails_signing(ours: pki.C2paCredentials, tsa: str) -> None:
    bad = tsa.rsplit(":", 1)[0] + ":1/"  # nothing listens on port 1
    with pytest.raises(TimeStampError):
        ManifestSigner(ours, tsa_url=bad).sign(encode(photo("coffee.png")), "image/png", ManifestContent("r"))


def test_open_time_stamp_authority_follows_the_settings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pki.load_or_create(tmp_path / "c2pa")
    url, close = open_time_stamp_authority(Settings(data_dir=tmp_path), tmp_path / "c2pa")
    try:
        assert url is not None and url.startswith("http://127.0.0.1:")
    finally:
        close()
    url, close = open_time_stamp_authority(Settings(data_dir=tmp_path, tsa_url="http://tsa.example/"), tmp_path)
    assert url == "http://tsa.example/"
    close()
    operator = Settings(data_dir=tmp_path, c2pa_cert_chain=tmp_path / "c.pem", c2pa_private_key=tmp_path / "k.pem")
    with caplog.at_level("WARNING"):
        url, close = open_time_stamp_authority(operator, tmp_path / "c2pa")
    assert url is None and "PROVENANCE_TSA_URL" in caplog.text
    close()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_upload_with_a_manifest_becomes_the_parent_ingredient(
    ours: pki.C2paCredentials, foreign: pki.C2paCredentials, tsa: str, fmt: str
) -> None:
    mime = f"image/{fmt.lower()}"
    upload = _foreign_upload(foreign, fmt)
    marked = encode(photo("chelsea.png"), fmt)  # stands in for the watermarked, re-encoded pixels
    signed = ManifestSigner(ours, tsa_url=tsa).sign(marked, mime, ManifestContent(record_id="r1"), original=upload)

    report = ManifestReader(ours).read(signed, mime)
    # The active manifest is ours and trusted, even though the ingredient's signer is not.
    assert report.valid and report.trusted and report.record_id == "r1" and report.failures == []
    assert report.summary["actions"][0]["action"] == "c2pa.opened"
    assert report.summary["actions"][0]["digitalSourceType"] is None  # no source type stated: none claimed
    [ingredient] = report.ingredients
    assert ingredient["relationship"] == "parentOf" and ingredient["has_manifest"]
    assert ingredient["title"] == "provenance record camera-1"
    assert ingredient["issuer"] == FOREIGN_ORG and ingredient["claim_generator"] == ["provenance 0.1.0"]
    assert ingredient["actions"][0]["action"] == "c2pa.created"
    assert ingredient["valid"] and not ingredient["trusted"] and ingredient["validation_state"] == "Valid"
    assert "signingCredential.untrusted" in ingredient["validation"]["failure"]
    assert ingredient["manifest"] != report.summary["label"]
    assert report.time_stamp["trusted"] and not ingredient["time_stamp"]["present"]
    assert report.as_dict()["ingredients"] == report.ingredients

    # Trusting the foreign root too makes the ingredient trusted: each signer is judged on its own.
    both = pki.C2paCredentials(ours.chain_pem, ours.private_key_pem, ours.trust_anchors_pem + foreign.trust_anchors_pem)
    trusting = ManifestReader(both).read(signed, mime)
    assert trusting.trusted and trusting.ingredients[0]["trusted"]


def test_an_ingredient_recorded_as_trusted_is_not_trusted_by_a_reader_that_does_not_trust_it(
    ours: pki.C2paCredentials, foreign: pki.C2paCredentials
) -> None:
    """The active signer's note that the parent was trusted (by its anchors) is not our verdict."""
    both = pki.C2paCredentials(ours.chain_pem, ours.private_key_pem, ours.trust_anchors_pem + foreign.trust_anchors_pem)
    signed = ManifestSigner(both).sign(
        encode(photo("chelsea.png")), "image/png", ManifestContent(record_id="r1"), original=_foreign_upload(foreign)
    )
    report = ManifestReader(ours).read(signed, "image/png")
    assert report.trusted and report.validation_state == "Valid"  # c2pa's overall state drops; ours does not
    assert not report.ingredients[0]["trusted"]
    assert ManifestReader(both).read(signed, "image/png").ingredients[0]["trusted"]


def test_a_swapped_ingredient_manifest_invalidates_the_file(
    ours: pki.C2paCredentials, foreign: pki.C2paCredentials
) -> None:
    signed = ManifestSigner(ours).sign(
        encode(photo("chelsea.png")), "image/png", ManifestContent(record_id="r1"), original=_foreign_upload(foreign)
    )
    # Inside the copied parent manifest, outside the data hash: only the ingredient binding sees it.
    at = signed.index(b"record_id\x68camera-1") + len(b"record_id\x68")
    tampered = signed[:at] + b"camera-2" + signed[at + 8 :]
    report = ManifestReader(ours).read(tampered, "image/png")
    assert not report.valid and not report.trusted
    assert any("ingredient.manifest.mismatch" in failure for failure in report.failures)
    assert not report.ingredients[0]["valid"]


def test_upload_without_a_manifest_is_created_not_opened(ours: pki.C2paCredentials) -> None:
    png = encode(photo("coffee.png"))
    content = ManifestContent(record_id="r1", source_type="digitalCapture")
    signed = ManifestSigner(ours).sign(png, "image/png", content, original=png)
    report = ManifestReader(ours).read(signed, "image/png")
    assert report.summary["actions"][0]["action"] == "c2pa.created" and report.ingredients == []


def test_no_source_type_makes_no_claim_and_still_validates(ours: pki.C2paCredentials) -> None:
    """C2PA requires a digitalSourceType on c2pa.created: with none stated, the upload is opened instead."""
    png = encode(photo("coffee.png"))
    signer = ManifestSigner(ours)
    signed = signer.sign_noted(png, "image/png", ManifestContent(record_id="r1"), original=png)
    assert signed.note is None
    report = ManifestReader(ours).read(signed.data, "image/png")
    assert report.state == "trusted" and report.failures == [] and report.validation_state == "Trusted"
    assert report.summary["actions"] == [{"action": "c2pa.opened", "digitalSourceType": None}]
    assert b"digitalsourcetype" not in signed.data.lower()  # c2pa added no claim of its own
    [upload] = report.ingredients
    assert upload["relationship"] == "parentOf" and not upload["has_manifest"]


def test_a_parent_manifest_that_fails_validation_stays_with_the_ingredient(
    ours: pki.C2paCredentials, foreign: pki.C2paCredentials
) -> None:
    """A broken upload manifest is history: listed under the ingredient, never against our manifest."""
    upload = _foreign_upload(foreign)
    at = upload.index(b"provenance record camera-1")
    broken = upload[:at] + b"provenance record camera-2" + upload[at + 26 :]  # inside its signed claim
    as_is = ManifestReader(ours).read(broken, "image/png")
    assert as_is.state == "invalid" and any("claimSignature.mismatch" in f for f in as_is.failures)
    signed = ManifestSigner(ours).sign_noted(
        encode(photo("chelsea.png")), "image/png", ManifestContent(record_id="r1"), original=broken
    )
    report = ManifestReader(ours).read(signed.data, "image/png")
    assert report.state == "trusted" and report.failures == [], report.failures
    if signed.note is None:  # c2pa kept it as the parent: its failure is listed under it
        [ingredient] = report.ingredients
        assert ingredient["state"] == "invalid" and "claimSignature.mismatch" in ingredient["failures"]
    else:
        assert "parent ingredient" in signed.note and report.ingredients[0]["has_manifest"] is False


def test_an_unreadable_parent_manifest_is_left_out_with_a_note(ours: pki.C2paCredentials) -> None:
    """Remote manifests are never fetched: certify signs the pixels without that history and says why."""
    png = encode(photo("coffee.png"))
    # A PNG whose only C2PA trace is a link to a remote manifest (XMP dcterms:provenance), as c2pa reads it.
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:dcterms="http://purl.org/dc/terms/" '
        b'dcterms:provenance="http://127.0.0.1:9/remote.c2pa"/></rdf:RDF></x:xmpmeta>'
    )
    remote = _with_itxt(png, b"XML:com.adobe.xmp", xmp)
    as_is = ManifestReader(ours).read(remote, "image/png")
    assert as_is.present and as_is.state == "unverifiable" and not as_is.valid, as_is
    signed = ManifestSigner(ours).sign_noted(png, "image/png", ManifestContent(record_id="r1"), original=remote)
    assert signed.note and "cannot be read" in signed.note
    assert ManifestReader(ours).read(signed.data, "image/png").state == "trusted"


def _with_itxt(png: bytes, keyword: bytes, text: bytes) -> bytes:
    import struct
    import zlib

    body = keyword + b"\x00\x00\x00\x00\x00" + text
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


def test_certify_keeps_the_history_and_time_stamps(services: Services, foreign: pki.C2paCredentials) -> None:
    """Through the whole pipeline: watermark, re-encode, sign with the service's own TSA."""
    assert services.tsa_url and services.tsa_url.startswith("http://127.0.0.1:")
    upload = _foreign_upload(foreign)
    certified = services.certifier.certify(upload, CertifyOptions(source_type="compositeWithTrainedAlgorithmicMedia"))
    report = ManifestReader(services.credentials).read(certified.data, "image/png")
    assert report.trusted and report.record_id == certified.record.id
    assert report.summary["actions"][0] == {
        "action": "c2pa.opened",
        "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia",
    }
    assert report.time_stamp["validated"] and report.time_stamp["trusted"]
    [ingredient] = report.ingredients
    assert ingredient["relationship"] == "parentOf" and ingredient["issuer"] == FOREIGN_ORG
    assert not ingredient["trusted"]

    checks = services.verifier.verify(certified.data).checks["c2pa"]
    assert checks["trusted"] and checks["ingredients"][0]["issuer"] == FOREIGN_ORG
    assert checks["time_stamp"]["trusted"]
