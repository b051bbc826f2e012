"""An RFC 3161 time-stamp authority for C2PA signatures.

A manifest whose signature carries a trusted time-stamp stays valid after the signing certificate
expires: verifiers check the certificate at the stamped time, not now. By default the service runs
its own TSA: a certificate issued by the service root CA (critical timeStamping EKU, see
``pki.issue_tsa_certificate``), answering RFC 3161 queries in process behind a small HTTP server on
127.0.0.1. ``PROVENANCE_TSA_URL`` points at a public TSA instead.

The tokens are the ones ``openssl ts -reply`` wrote with the configuration this module used before
(issue #21 moved them in process: a process per request cost about 15 ms of every certification): a
CMS SignedData over a TSTInfo (policy ``POLICY_OID``, the query's message imprint and nonce echoed,
accuracy one second, the TSA's name), signed with the TSA key over the signed attributes content
type, signing time, message digest and an ESSCertIDv2 (SHA-256) of the TSA certificate, which is
included when the query asks for it. Serial numbers are 127 random bits instead of a counter file,
so several processes stamping with the same key never share one and need no lock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import algos, cms, core, tsp, x509
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from provenance.errors import ConfigurationError
from provenance.manifests import pki

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
# A TSA must name the policy its stamps are issued under. A 2.25 (UUID) OID needs no registration.
POLICY_OID = "2.25.254009498038932518310755354351396832930"
MAX_QUERY_BYTES = 64 * 1024  # a query is a hash and a nonce: a few hundred bytes
# The imprint digests a query may use, with their lengths (what the openssl configuration allowed).
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}
_REJECTED_TEXT = "Bad request format or system error."  # openssl's wording, kept for clients that log it


def _tlv(tag: int, body: bytes) -> bytes:
    """One DER element: the tag byte, the definite length, the contents."""
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


_SEQUENCE, _SET, _OCTET_STRING, _CONTEXT_0 = 0x30, 0x31, 0x04, 0xA0


class _Signer:
    """The TSA key and certificate, loaded once, and the DER every token repeats.

    asn1crypto encodes each TSTInfo and the per-token attributes; the CMS envelope around them is
    the same for every token but for their lengths, so its constant parts are encoded once here (by
    asn1crypto) and joined per token. Building the whole envelope with asn1crypto objects cost about
    5 ms a token, mostly re-encoding the certificate; joining bytes costs microseconds.
    """

    def __init__(self, directory: Path) -> None:
        pem = (directory / "tsa.cert.pem").read_bytes()
        cert_der = cx509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        certificate = x509.Certificate.load(cert_der)
        key = serialization.load_pem_private_key((directory / "tsa.key.pem").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigurationError(f"{directory / 'tsa.key.pem'} is not an EC or RSA private key.")
        self.key = key
        signature_algorithm = "sha256_ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "sha256_rsa"
        sha256 = algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
        self.name_der = x509.GeneralName(name="directory_name", value=certificate.subject).dump()
        self.signed_data_oid = cms.ContentType("signed_data").dump()
        self.tst_info_oid = cms.ContentType("tst_info").dump()
        self.digest_algorithms = _tlv(_SET, sha256)
        self.certificates = _tlv(_CONTEXT_0, cert_der)  # [0] IMPLICIT SET OF CertificateChoices: the TSA's own
        sid = cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value=cms.IssuerAndSerialNumber({"issuer": certificate.issuer, "serial_number": certificate.serial_number}),
        ).dump()
        self.signer_info_head = core.Integer(1).dump() + sid + sha256  # version 1, sid, digest algorithm
        self.signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}).dump()
        self.content_type_attribute = _attribute("content_type", "tst_info").dump()
        # ESSCertIDv2 with the default hash (SHA-256, so omitted) and no issuerSerial, as openssl wrote it.
        self.signing_certificate_attribute = _attribute(
            "signing_certificate_v2",
            tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2({"cert_hash": hashlib.sha256(cert_der).digest()})]}),
        ).dump()
        self.granted = tsp.PKIStatusInfo({"status": "granted"}).dump()

    def sign(self, data: bytes) -> bytes:
        """The signature of ``data`` (DER-encoded signed attributes) with the TSA key."""
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def token(self, tst_info: bytes, when: dt.datetime, *, with_certificate: bool) -> bytes:
        """The TimeStampToken (RFC 3161 2.4.2, a CMS ContentInfo holding SignedData) over ``tst_info``."""
        attributes = sorted(  # DER sorts a SET OF by encoding; verifiers re-encode the attributes to check them
            (
                self.content_type_attribute,
                _attribute("signing_time", cms.Time(name="utc_time", value=when)).dump(),
                _attribute("message_digest", hashlib.sha256(tst_info).digest()).dump(),
                self.signing_certificate_attribute,
            )
        )
        joined = b"".join(attributes)
        # The signature covers the attributes encoded as a SET (tag 0x31), stored as [0] IMPLICIT.
        signature = self.sign(_tlv(_SET, joined))
        signer_info = _tlv(
            _SEQUENCE,
            self.signer_info_head
            + _tlv(_CONTEXT_0, joined)
            + self.signature_algorithm
            + _tlv(_OCTET_STRING, signature),
        )
        encapsulated = _tlv(_SEQUENCE, self.tst_info_oid + _tlv(_CONTEXT_0, _tlv(_OCTET_STRING, tst_info)))
        signed_data = _tlv(
            _SEQUENCE,
            core.Integer(3).dump()
            + self.digest_algorithms
            + encapsulated
            + (self.certificates if with_certificate else b"")
            + _tlv(_SET, signer_info),
        )
        return _tlv(_SEQUENCE, self.signed_data_oid + _tlv(_CONTEXT_0, signed_data))


def _rejection(fail_info: str) -> bytes:
    status = tsp.PKIStatusInfo(
        {"status": "rejection", "status_string": [_REJECTED_TEXT], "fail_info": tsp.PKIFailureInfo({fail_info})}
    )
    return _tlv(_SEQUENCE, status.dump())  # TimeStampResp without a token


def _attribute(kind: str, value: Any) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": kind, "values": [value]})


def build_reply(signer: _Signer, query: bytes, *, now: dt.datetime | None = None) -> bytes:
    """The DER TimeStampResp for a DER TimeStampReq: a granted token, or a rejection saying why."""
    try:
        request = tsp.TimeStampReq.load(query, strict=True)
        version = request["version"].native
        imprint = request["message_imprint"]
        algorithm = imprint["hash_algorithm"]["algorithm"].native
        hashed = imprint["hashed_message"].native
        policy = request["req_policy"].native
        nonce = request["nonce"].native
        cert_req = bool(request["cert_req"].native)
        has_extensions = request["extensions"].native is not None
    except (ValueError, TypeError, KeyError):  # asn1crypto raises these for malformed DER
        return _rejection("bad_data_format")
    if version != "v1":
        return _rejection("bad_data_format")
    if algorithm not in DIGEST_SIZES:
        return _rejection("bad_alg")
    if len(hashed) != DIGEST_SIZES[algorithm]:
        return _rejection("bad_data_format")
    if policy is not None and policy != POLICY_OID:
        return _rejection("unaccepted_policy")
    if has_extensions:
        return _rejection("unaccepted_extensions")

    when = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    info: dict[str, Any] = {
        "version": "v1",
        "policy": POLICY_OID,
        "message_imprint": tsp.MessageImprint({"hash_algorithm": {"algorithm": algorithm}, "hashed_message": hashed}),
        "serial_number": secrets.randbits(127) | 1,
        "gen_time": when,
        "accuracy": {"seconds": 1},
        "tsa": x509.GeneralName.load(signer.name_der),
    }
    if nonce is not None:
        info["nonce"] = nonce
    token = signer.token(tsp.TSTInfo(info).dump(), when, with_certificate=cert_req)
    return _tlv(_SEQUENCE, signer.granted + token)


class LocalTimeStampAuthority:
    """RFC 3161 answered in process (``build_reply``) behind a threaded HTTP server on a free 127.0.0.1 port.

    ``directory`` holds ``tsa.cert.pem`` and ``tsa.key.pem`` (see ``pki.issue_tsa_certificate``), read on ``start``.
    """

    def __init__(self, directory: Path, *, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.host = host
        self._signer: _Signer | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the running authority answers (``http://<host>:<port>/``)."""
        if self._server is None:
            raise RuntimeError("the time-stamp authority is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> str:
        """Load the TSA key and certificate, start serving and return the URL to hand to the signer."""
        if self._server is not None:
            return self.url
        for name in ("tsa.cert.pem", "tsa.key.pem"):
            if not (self.directory / name).exists():
                raise ConfigurationError(f"{self.directory / name} is missing: issue the TSA certificate first.")
        self._signer = _Signer(self.directory)
        server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="provenance-tsa", daemon=True)
        self._thread.start()
        log.info("local time-stamp authority listening on %s", self.url)
        return self.url

    def close(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalTimeStampAuthority:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reply(self, query: bytes) -> bytes:
        """The DER time-stamp response for a DER time-stamp query (a rejection response for a bad query)."""
        if self._signer is None:
            raise RuntimeError("the time-stamp authority is not running")
        return build_reply(self._signer, query)


def _handler_for(authority: LocalTimeStampAuthority) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """RFC 3161 over HTTP (section 3.4): POST a query, get a reply."""

        # One write per response (headers and body buffered until the handler finishes), sent without Nagle's delay.
        wbufsize = 64 * 1024
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != QUERY_TYPE:
                self._send(415, b"expected " + QUERY_TYPE.encode(), "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, b"Content-Length required", "text/plain")
                return
            if not 0 < length <= MAX_QUERY_BYTES:
                self._send(413, b"time-stamp query too large", "text/plain")
                return
            try:
                body = authority.reply(self.rfile.read(length))
            except (ValueError, RuntimeError) as exc:
                log.warning("time-stamp request refused: %s", exc)
                self._send(503, b"time-stamp authority unavailable", "text/plain")
                return
            self._send(200, body, REPLY_TYPE)

        def do_GET(self) -> None:
            self._send(405, b"POST an application/timestamp-query", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("tsa: " + format, *args)

    return Handler


def _nothing() -> None:
    """Closer for when there is no local server to stop."""


class TimeStampValues(Protocol):
    """What ``open_time_stamp_authority`` reads (``Settings`` has it)."""

    tsa_url: str | None
    c2pa_cert_chain: Path | None


def open_time_stamp_authority(
    settings: TimeStampValues, c2pa_dir: Path, *, needed: bool = True
) -> tuple[str | None, Callable[[], None]]:
    """The TSA URL for C2PA signing and a function that releases it.

    ``PROVENANCE_TSA_URL`` set: that authority, nothing started. The embedded CA: a local TSA
    whose certificate the service root issues (so verifiers that trust the root trust the stamp).
    An operator's own C2PA chain without a TSA URL: no time-stamp, since the service holds no key
    that the operator's verifiers would trust for one.
    """
    if not needed:  # a command that never signs (verify, key and trust administration)
        return None, _nothing
    if settings.tsa_url:
        return settings.tsa_url, _nothing
    if settings.c2pa_cert_chain is not None:
        log.warning(
            "C2PA manifests are signed without a time-stamp: set PROVENANCE_TSA_URL to an RFC 3161 "
            "time-stamp authority so signatures stay valid after the signing certificate expires."
        )
        return None, _nothing
    pki.issue_tsa_certificate(c2pa_dir)
    authority = LocalTimeStampAuthority(c2pa_dir)
    return authority.start(), authority.close
