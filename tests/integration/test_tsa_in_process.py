"""The embedded time-stamp authority answers RFC 3161 in process with the token openssl wrote before (issue #21)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from asn1crypto import core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provenance.manifests import pki
from provenance.manifests.tsa import POLICY_OID, LocalTimeStampAuthority


class _Rejection(core.Sequence):
    """A TimeStampResp without a token (asn1crypto's own declares the token mandatory)."""

    _fields: ClassVar[list[tuple[str, type[tsp.PKIStatusInfo]]]] = [("status", tsp.PKIStatusInfo)]


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[LocalTimeStampAuthority]:
    pki.load_or_create(tmp_path / "ca")
    pki.issue_tsa_certificate(tmp_path / "ca")
    with LocalTimeStampAuthority(tmp_path / "ca") as running:
        yield running


def _query(tmp_path: Path, name: str, *options: str) -> bytes:
    (tmp_path / "data.bin").write_bytes(b"the claim signature")
    subprocess.run(
        ["openssl", "ts", "-query", "-data", "data.bin", *options, "-out", f"{name}.tsq"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return (tmp_path / f"{name}.tsq").read_bytes()


def _openssl_verify(tmp_path: Path, name: str, reply: bytes) -> subprocess.CompletedProcess[str]:
    ca = tmp_path / "ca"
    (tmp_path / f"{name}.tsr").write_bytes(reply)
    return subprocess.run(
        ["openssl", "ts", "-verify", "-in", f"{name}.tsr", "-queryfile", f"{name}.tsq",
         "-CAfile", str(ca / "root-ca.cert.pem"), "-untrusted", str(ca / "tsa.cert.pem")],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize("options", [("-sha256", "-cert"), ("-sha256", "-no_nonce"), ("-sha512", "-cert")])
def test_openssl_verifies_the_in_process_token_against_the_ca(
    tmp_path: Path, authority: LocalTimeStampAuthority, options: tuple[str, ...]
) -> None:
    query = _query(tmp_path, "q", *options)
    verified = _openssl_verify(tmp_path, "q", authority.reply(query))
    assert "Verification: OK" in verified.stdout, verified.stdout + verified.stderr

    # The same token checked against other data fails: openssl really compares the imprint.
    (tmp_path / "other.bin").write_bytes(b"something else")
    mismatched = subprocess.run(
        ["openssl", "ts", "-verify", "-in", "q.tsr", "-data", "other.bin",
         "-CAfile", str(tmp_path / "ca" / "root-ca.cert.pem"), "-untrusted", str(tmp_path / "ca" / "tsa.cert.pem")],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert "Verification: OK" not in mismatched.stdout


def test_token_fields_match_the_format_openssl_wrote(tmp_path: Path, authority: LocalTimeStampAuthority) -> None:
    request = tsp.TimeStampReq.load(_query(tmp_path, "q", "-sha256", "-cert"))
    response = tsp.TimeStampResp.load(authority.reply(request.dump()))
    assert response["status"]["status"].native == "granted"
    token = response["time_stamp_token"]
    assert token["content_type"].native == "signed_data"
    signed = token["content"]
    info = signed["encap_content_info"]["content"].parsed
    assert signed["encap_content_info"]["content_type"].native == "tst_info"
    assert info["policy"].dotted == POLICY_OID
    assert info["nonce"].native == request["nonce"].native
    assert info["message_imprint"].dump() == request["message_imprint"].dump()
    assert info["accuracy"].native == {"seconds": 1, "millis": None, "micros": None}
    assert info["ordering"].native is False

    cert_pem = (tmp_path / "ca" / "tsa.cert.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    assert info["tsa"].name == "directory_name"  # the TSA's subject, as openssl's tsa_name = yes wrote it
    assert info["tsa"].chosen.native == asn1_x509.Name.load(cert.subject.public_bytes()).native
    # The TSA certificate is included because the query asked for it (certReq).
    assert [c.chosen.dump() for c in signed["certificates"]] == [cert_der]
    (signer,) = signed["signer_infos"]
    assert signer["sid"].chosen["serial_number"].native == cert.serial_number
    assert signer["signature_algorithm"]["algorithm"].native == "sha256_ecdsa"
    attributes = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
    assert set(attributes) == {"content_type", "signing_time", "message_digest", "signing_certificate_v2"}
    assert attributes["message_digest"].native == hashlib.sha256(info.dump()).digest()
    (ess,) = attributes["signing_certificate_v2"]["certs"]
    assert ess["hash_algorithm"]["algorithm"].native == "sha256"
    assert ess["cert_hash"].native == hashlib.sha256(cert_der).digest()

    # Without certReq the token carries no certificate, as openssl's did.
    bare = tsp.TimeStampResp.load(authority.reply(_query(tmp_path, "n", "-sha256", "-no_nonce")))
    assert not bare["time_stamp_token"]["content"]["certificates"].native
    assert bare["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed["nonce"].native is None


def test_serials_are_unique_across_authorities_on_the_same_key(tmp_path: Path) -> None:
    pki.load_or_create(tmp_path / "ca")
    pki.issue_tsa_certificate(tmp_path / "ca")
    query = _query(tmp_path, "q", "-sha256")
    serials = set()
    # Two authorities on one key directory stand for two processes (API and worker): no shared counter.
    with LocalTimeStampAuthority(tmp_path / "ca") as first, LocalTimeStampAuthority(tmp_path / "ca") as second:
        for authority in (first, second) * 50:
            info = tsp.TimeStampResp.load(authority.reply(query))["time_stamp_token"]["content"]
            serials.add(info["encap_content_info"]["content"].parsed["serial_number"].native)
    assert len(serials) == 100


@pytest.mark.parametrize(
    ("options", "failure"),
    [
        (("-sha1",), "bad_alg"),
        (("-sha256", "-tspolicy", "1.2.3.4"), "unaccepted_policy"),
    ],
)
def test_queries_outside_the_policy_are_rejected_with_a_reason(
    tmp_path: Path, authority: LocalTimeStampAuthority, options: tuple[str, ...], failure: str
) -> None:
    # strict: the response holds the status and nothing else (no token).
    status = _Rejection.load(authority.reply(_query(tmp_path, "q", *options)), strict=True)["status"]
    assert status["status"].native == "rejection"
    assert status["fail_info"].native == {failure}


def test_malformed_query_gets_a_rejection_openssl_reads(tmp_path: Path, authority: LocalTimeStampAuthority) -> None:
    (tmp_path / "bad.tsr").write_bytes(authority.reply(b"\x30\x03\x02\x01\x01"))
    text = subprocess.run(
        ["openssl", "ts", "-reply", "-in", "bad.tsr", "-text"], cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert "Status: Rejected" in text and "wrong format" in text, text
