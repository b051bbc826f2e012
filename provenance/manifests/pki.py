"""The service's own certificate authority for C2PA signing.

c2pa refuses a self-signed leaf and a CA certificate as signer, so on first start we create a
root CA and an end-entity P-256 certificate it issues (X.509 v3, CA=false, digitalSignature,
EKU documentSigning + emailProtection, a subject with CN and O). The chain handed to c2pa is the
leaf followed by any intermediates, root excluded; verifiers get the root as a trust anchor.
Operators can point the settings at their own chain and key instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provenance import PRODUCT_NAME
from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic, write_private

# id-kp-documentSigning (RFC 9336); c2pa accepts it for claim signing.
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class C2paCredentials:
    """What the C2PA signer and reader need."""

    chain_pem: bytes  # leaf first, then intermediates; never the root
    private_key_pem: bytes
    trust_anchors_pem: bytes  # roots trusted when reading manifests

    @property
    def leaf(self) -> x509.Certificate:
        """The signing certificate (the first of the chain)."""
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(directory: Path, organization: str = f"{PRODUCT_NAME} service") -> None:
    """Create root CA and signing certificate in ``directory`` (keys 0600)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{PRODUCT_NAME} root CA", organization)
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{PRODUCT_NAME} C2PA signer", organization))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "root-ca.key.pem", _pem_key(root_key))
    write_atomic(directory / "root-ca.cert.pem", root.public_bytes(serialization.Encoding.PEM))
    write_private(directory / "signer.key.pem", _pem_key(leaf_key))
    write_atomic(directory / "signer.chain.pem", leaf.public_bytes(serialization.Encoding.PEM))


def load_or_create(
    directory: Path,
    *,
    chain_path: Path | None = None,
    key_path: Path | None = None,
    extra_anchors_path: Path | None = None,
) -> C2paCredentials:
    """The operator's chain and key if configured, else the service CA (created on first use)."""
    if (chain_path is None) != (key_path is None):
        raise ConfigurationError("Set both PROVENANCE_C2PA_CERT_CHAIN and PROVENANCE_C2PA_PRIVATE_KEY, or neither.")
    anchors = b""
    if chain_path is not None and key_path is not None:
        try:
            chain, key = chain_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"Cannot read the C2PA signing chain or key: {exc}") from None
    else:
        if not (directory / "signer.chain.pem").exists():
            create_ca(directory)
        chain = (directory / "signer.chain.pem").read_bytes()
        key = (directory / "signer.key.pem").read_bytes()
        anchors = (directory / "root-ca.cert.pem").read_bytes()
    if extra_anchors_path is not None:
        anchors += extra_anchors_path.read_bytes()
    return C2paCredentials(chain_pem=chain, private_key_pem=key, trust_anchors_pem=anchors)


def issue_tsa_certificate(directory: Path, organization: str = f"{PRODUCT_NAME} service") -> None:
    """Issue (or renew) the time-stamp authority's certificate from the service root CA.

    RFC 3161 requires the TSA certificate to carry the timeStamping EKU as its only, critical
    extended key usage; c2pa validates the time-stamp against the same trust anchors as the
    claim signature, so issuing it from the service root makes the time-stamp trusted too.
    Kept when still issued by the current root and valid for at least a day; else re-issued.
    Only the embedded CA has ``root-ca.key.pem``; an operator's chain has no key here to issue with.
    """
    root_key_path, root_cert_path = directory / "root-ca.key.pem", directory / "root-ca.cert.pem"
    if not root_key_path.exists():
        raise ConfigurationError(f"No service root CA key in {directory}: the local time-stamp authority needs one.")
    root = x509.load_pem_x509_certificate(root_cert_path.read_bytes())
    cert_path = directory / "tsa.cert.pem"
    now = dt.datetime.now(dt.UTC)
    if cert_path.exists() and (directory / "tsa.key.pem").exists():
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key((directory / "tsa.key.pem").read_bytes(), password=None)
        try:
            current.verify_directly_issued_by(root)
            # The key is written before the certificate: a crash in between leaves a pair that does not match.
            matches = current.public_key() == key.public_key()
            if matches and current.not_valid_after_utc - now > dt.timedelta(days=1):
                return
        except (ValueError, TypeError, InvalidSignature):
            pass  # issued by an earlier root: issue a fresh one below
    root_key = serialization.load_pem_private_key(root_key_path.read_bytes(), password=None)
    if not isinstance(root_key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{root_key_path} is not an EC private key.")
    start = now - dt.timedelta(minutes=5)
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{PRODUCT_NAME} time-stamp authority", organization))
        .issuer_name(root.subject)
        .public_key(tsa_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        # Never outlive the issuer: a verifier would reject the tail end of the validity.
        .not_valid_after(min(start + dt.timedelta(days=3650), root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    write_private(directory / "tsa.key.pem", _pem_key(tsa_key))
    write_atomic(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
