"""Stage 4, hash and sign: SHA-256 of the final bytes, signed with ECDSA P-256.

The signature is the DER ECDSA signature over the file bytes with SHA-256, base64-encoded, so
``openssl dgst -sha256 -verify pub.pem -signature sig.der FILE`` accepts it. A key id is the hex
SHA-256 of the public key's DER (SubjectPublicKeyInfo). Keys rotate: every key ever used stays in
the key store, and records name the key that signed them.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic, write_private


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lowercase hex characters."""
    return hashlib.sha256(data).hexdigest()


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """A key's id: the hex SHA-256 of its DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), as ``openssl`` and ``verify_signature`` read it."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def verify_signature(public_key_pem: str, data: bytes, signature_b64: str) -> bool:
    """Check a base64 DER ECDSA-SHA256 signature over ``data``."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        key.verify(base64.b64decode(signature_b64, validate=True), data, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


@dataclass(frozen=True)
class SigningKey:
    """A private signing key and its id. Never serialised back out."""

    key_id: str
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_key_pem(self) -> str:
        """The matching public key as PEM."""
        return public_pem(self.private_key.public_key())

    def sign(self, data: bytes) -> str:
        """Sign ``data``: the base64 DER ECDSA-SHA256 signature that ``verify_signature`` checks."""
        return base64.b64encode(self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


class KeyStore:
    """ECDSA keys in ``<data_dir>/keys``: one 0600 PEM per key, and a pointer to the active one."""

    def __init__(self, directory: Path, *, external_key_file: Path | None = None) -> None:
        self.directory = directory
        self._external = external_key_file
        self._cached: tuple[int, SigningKey] | None = None

    def _load(self, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"Cannot load signing key {path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigurationError(f"Signing key {path} must be an ECDSA P-256 private key.")
        return SigningKey(key_id_of(key.public_key()), key)

    def active(self) -> SigningKey:
        """The key new records are signed with; created on first use.

        Loaded once and kept until the key file (or the ``active`` pointer, when another process such
        as ``provenance keys rotate`` changes it) has a new modification time: one ``stat`` per call.
        """
        path = self._external if self._external is not None else self.directory / "active"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            if self._external is not None:
                raise ConfigurationError(f"Signing key file {path} does not exist.") from None
            return self.rotate()
        if self._cached is None or self._cached[0] != stamp:
            if self._external is not None:
                key = self._load(self._external)
            else:
                key = self._load(self.directory / f"{path.read_text().strip()}.pem")
            self._cached = (stamp, key)
        return self._cached[1]

    def create(self) -> SigningKey:
        """Create a new key (0600) without making it active: publish it first, then ``activate`` it."""
        if self._external is not None:
            raise ConfigurationError("The signing key comes from PROVENANCE_SIGNING_KEY_FILE; rotate it there.")
        key = ec.generate_private_key(ec.SECP256R1())
        key_id = key_id_of(key.public_key())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(self.directory / f"{key_id}.pem", pem)
        return SigningKey(key_id, key)

    def activate(self, key_id: str) -> SigningKey:
        """Make a key created here the one new records are signed with."""
        key = self._load(self.directory / f"{key_id}.pem")
        write_atomic(self.directory / "active", key_id.encode())
        self._cached = ((self.directory / "active").stat().st_mtime_ns, key)
        return key

    def rotate(self) -> SigningKey:
        """Create a new key and make it active at once. Old keys stay for verification."""
        return self.activate(self.create().key_id)
