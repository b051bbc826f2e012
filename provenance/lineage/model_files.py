"""What a model is made of: its files, their SHA-256, the model digest, and the model-signing signature.

A model is one file (a single-file checkpoint or a LoRA: ``.safetensors``, ``.ckpt``, ``.bin``, ``.pt``,
``.pth``) or a folder (a diffusers pipeline, or any folder holding at least one such weight file). Every
regular file of a folder counts, except what ``model-signing`` leaves out by default (``.git/``,
``.github/``, ``.gitattributes``, ``.gitignore``), so both hash the same files.

The **model digest** is ``sha256(b"provenance.model-files.v1\\n" + lines)``, where ``lines`` is, for each
file sorted by its relative path (POSIX separators), ``"<relative path>\\t<sha256 hex>\\n"`` in UTF-8.
A single file's relative path is the empty string: its digest depends on its bytes only, so a renamed
copy of a registered LoRA still matches.

The signature is ``model-signing``'s (OpenSSF) sigstore bundle, made offline with an elliptic-curve
private key (the service's ECDSA P-256 key, which the library accepts) over its own manifest of the
files; ``model_signing.verifying`` checks it with the public key.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance.errors import InputError

DIGEST_TAG = b"provenance.model-files.v1\n"
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")
IGNORED_NAMES = frozenset({".git", ".github", ".gitattributes", ".gitignore"})  # model-signing's defaults


class NotAModelError(InputError):
    """A path that is missing, or is not a model file or model folder."""

    code = "not_a_model"


def sha256_of_file(path: Path) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_paths(path: Path) -> list[tuple[str, Path]]:
    """``(relative path, file)`` of every file the digest covers, sorted; NotAModelError when it is no model."""
    if not path.exists():
        raise NotAModelError(f"{path}: no such file or folder.")
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise NotAModelError(f"{path.name}: not a model file (expected one of {', '.join(WEIGHT_SUFFIXES)}).")
        if path.suffix.lower() == ".safetensors":
            _check_safetensors(path)
        return [("", path)]
    if not path.is_dir():
        raise NotAModelError(f"{path}: not a regular file or folder.")
    found = []
    for file in path.rglob("*"):
        rel = file.relative_to(path)
        if rel.parts[0] in IGNORED_NAMES or not file.is_file():
            continue
        found.append((rel.as_posix(), file))
    if not any(file.suffix.lower() in WEIGHT_SUFFIXES for _, file in found):
        raise NotAModelError(f"{path}: a folder without weight files ({', '.join(WEIGHT_SUFFIXES)}) is not a model.")
    return sorted(found)


def _check_safetensors(path: Path) -> None:
    """Refuse a ``.safetensors`` file whose header does not parse (a renamed text file, a truncated download)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np"):
            pass
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise NotAModelError(f"{path.name}: not a readable .safetensors file ({type(exc).__name__}).") from None


def digest_lines(files: list[dict[str, Any]], *, single: bool) -> str:
    """The model digest of ``[{"path", "sha256"}]`` (see the module docstring); ``single``: one file, path ''."""
    h = hashlib.sha256(DIGEST_TAG)
    for entry in sorted(files, key=lambda e: e["path"]):
        h.update(f"{'' if single else entry['path']}\t{entry['sha256']}\n".encode())
    return h.hexdigest()


def digest_of(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """``(digest hex, files)`` of a model; ``files`` is ``[{"path", "sha256", "size"}]`` sorted by path.

    A single file is listed under its own name (the digest ignores the name).
    """
    paths = model_paths(path)
    single = path.is_file()
    files = [
        {"path": path.name if single else rel, "sha256": sha256_of_file(file), "size": file.stat().st_size}
        for rel, file in paths
    ]
    return digest_lines(files, single=single), files


Identity = tuple[tuple[str, int, int, int], ...]


def identity_of(path: Path) -> Identity:
    """What changes when any file of the model changes: (path, size, mtime_ns, inode) of each file."""
    out = []
    for _, file in model_paths(path):
        st = file.stat()
        out.append((str(file.resolve()), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


class DigestCache:
    """Model digests cached by file identity: a model is hashed once until one of its files changes."""

    def __init__(self, max_entries: int = 256) -> None:
        self._cache: dict[tuple[str, Identity], str] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def digest(self, path: Path) -> str:
        """The model digest of ``path``: a ``stat`` per file when it is cached, else a full hash."""
        key = (str(path.resolve()), identity_of(path))
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = digest_of(path)[0]
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = value
        return value


@dataclass(frozen=True)
class SignatureCheck:
    """What ``model-signing``'s verifier said: valid or not, and its message."""

    valid: bool
    detail: str


def _hashing_config() -> Any:
    """model-signing's file-by-file SHA-256 manifest; symlinks followed (a hub cache folder is made of them)."""
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=True)


def public_key_hint(public_key_pem: str) -> str:
    """The key hint model-signing writes into a bundle: the hex SHA-256 of the public key's PEM."""
    return hashlib.sha256(public_key_pem.encode()).hexdigest()


class ModelSigner:
    """Signs and verifies models with ``model-signing``'s elliptic-curve key signer (no network).

    ``key_file`` gives the active private key's PEM file (the service's ECDSA P-256 key);
    ``public_keys`` every public key (PEM) that may have signed a registered model (rotated keys too).
    """

    def __init__(self, key_file: Callable[[], Path], public_keys: Callable[[], list[str]]) -> None:
        self._key_file = key_file
        self._public_keys = public_keys

    def sign(self, path: Path) -> str:
        """The sigstore bundle (JSON text) over ``path``'s files."""
        from model_signing import signing

        with tempfile.TemporaryDirectory(prefix="model-sig-") as tmp:
            out = Path(tmp) / "model.sig"
            config = signing.Config().use_elliptic_key_signer(private_key=self._key_file())
            config.set_hashing_config(_hashing_config()).sign(path, out)
            return out.read_text()

    def verify(self, path: Path, bundle_json: str) -> SignatureCheck:
        """Check ``bundle_json`` against ``path`` with model-signing's verifier and the signer's public key."""
        try:
            hint = json.loads(bundle_json)["verificationMaterial"]["publicKey"]["hint"]
        except (ValueError, KeyError, TypeError):
            return SignatureCheck(False, "the stored signature is not a model-signing key bundle")
        pem = next((p for p in self._public_keys() if public_key_hint(p) == hint), None)
        if pem is None:
            return SignatureCheck(False, "signed by a key this service does not know")
        return verify_bundle(path, bundle_json, pem)


def verify_bundle(path: Path, bundle_json: str, public_key_pem: str) -> SignatureCheck:
    """model-signing's own verification of a bundle over ``path`` with one public key (PEM)."""
    from model_signing import verifying

    with tempfile.TemporaryDirectory(prefix="model-sig-") as tmp:
        sig, pub = Path(tmp) / "model.sig", Path(tmp) / "key.pub"
        sig.write_text(bundle_json)
        pub.write_text(public_key_pem)
        try:
            verifying.Config().use_elliptic_key_verifier(public_key=pub).verify(path, sig)
        except Exception as exc:  # the library raises ValueError, OSError and its own types
            message = str(exc)
            if message.startswith("Signature mismatch"):  # its diff lists raw digest bytes: say it plainly
                message = "the files do not match the signed manifest (model-signing: signature mismatch)"
            return SignatureCheck(False, message[:500])
    return SignatureCheck(True, "valid")


def service_public_keys(directory: Path, external_key_file: Path | None) -> list[str]:
    """The public halves (PEM) of the service's signing keys: every ``<id>.pem`` in the key store, and the
    external key file when one is configured."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from provenance.signing import public_pem

    files = sorted(directory.glob("*.pem")) if directory.is_dir() else []
    if external_key_file is not None:
        files.append(external_key_file)
    out = []
    for file in files:
        try:
            key = serialization.load_pem_private_key(file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePrivateKey):
            out.append(public_pem(key.public_key()))
    return out


def changed_files(registered: list[dict[str, Any]], current: list[dict[str, Any]], *, single: bool) -> list[str]:
    """Names of the files added, removed or changed since registration (a single file: its name, if changed)."""
    if single:
        same = len(registered) == 1 and len(current) == 1 and registered[0]["sha256"] == current[0]["sha256"]
        return [] if same else [current[0]["path"] if current else registered[0]["path"]]
    before = {e["path"]: e["sha256"] for e in registered}
    after = {e["path"]: e["sha256"] for e in current}
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
