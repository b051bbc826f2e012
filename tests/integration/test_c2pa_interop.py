"""Interop: every kind of manifest the service writes, read by an implementation that is not c2pa-rs.

``@trustnxt/c2pa-ts`` (pinned in package.json) is a TypeScript C2PA reader with its own CBOR,
COSE, JUMBF and hashing code. It checks claim signatures, data hashes and time-stamp tokens,
not trust chains. ``tests/c2pa_ts_read.mjs`` prints its verdict as JSON.

Where the two disagree (established here, see the tests at the end):
- sigTst2 time-stamps: c2pa-rs stores the bare TimeStampToken, as C2PA 2.x requires
  (GEN-CLAIMS-0023); c2pa-ts 0.9.4 expects a whole TimeStampResp and rejects the signature.
  c2pa-rs is right; c2pa-ts fixed it upstream (PR #546). The script's
  ``--accept-v2-timestamp-token`` does what that fix does.
- a parent manifest altered inside the file: c2pa-python reports ``ingredient.manifest.mismatch``;
  c2pa-ts 0.9.4 does not check ingredient bindings at all and calls the file valid.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenance.manifests import pki
from provenance.manifests.manifest import ManifestContent, ManifestReader, ManifestSigner
from provenance.manifests.tsa import LocalTimeStampAuthority
from tests.conftest import encode, photo

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "c2pa_ts_read.mjs"
KINDS = ["plain", "ingredient", "time-stamp", "ingredient+time-stamp"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pki.C2paCredentials, pki.C2paCredentials, str]]:
    """Our CA with its TSA running, and a foreign CA that signed the uploads."""
    assert shutil.which("node"), "node is needed for the c2pa-ts interop tests"
    assert (ROOT / "node_modules" / "@trustnxt" / "c2pa-ts").is_dir(), "run `make install` (npm ci) first"
    base = tmp_path_factory.mktemp("interop")
    ours = pki.load_or_create(base / "ours")
    pki.create_ca(base / "foreign", organization="Foreign Camera Co")
    foreign = pki.load_or_create(base / "foreign")
    pki.issue_tsa_certificate(base / "ours")
    with LocalTimeStampAuthority(base / "ours") as tsa:
        yield ours, foreign, tsa.url


def c2pa_ts(path: Path, *, accept_token: bool = True) -> dict[str, Any]:
    flags = ["--accept-v2-timestamp-token"] if accept_token else []
    done = subprocess.run(
        ["node", str(SCRIPT), *flags, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sign(ca: tuple[pki.C2paCredentials, pki.C2paCredentials, str], fmt: str, kind: str) -> bytes:
    ours, foreign, tsa_url = ca
    mime = f"image/{fmt.lower()}"
    pixels = encode(photo("astronaut.png"), fmt)
    original = None
    if "ingredient" in kind:
        original = ManifestSigner(foreign).sign(
            pixels, mime, ManifestContent(record_id="camera-1", source_type="digitalCapture")
        )
    signer = ManifestSigner(ours, tsa_url=tsa_url if "time-stamp" in kind else None)
    content = ManifestContent(record_id="r1", watermark_id=42, source_type="trainedAlgorithmicMedia")
    return signer.sign(pixels, mime, content, original=original)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_c2pa_ts_reads_every_kind_of_manifest_as_valid(ca: Any, tmp_path: Path, fmt: str, kind: str) -> None:
    signed = sign(ca, fmt, kind)
    path = tmp_path / f"signed.{fmt.lower()}"
    path.write_bytes(signed)
    verdict = c2pa_ts(path)
    assert verdict["present"] and verdict["valid"], verdict["statuses"]
    assert verdict["claimSignatureValid"] and verdict["dataHashValid"]
    assert all(verdict["manifestSignatures"].values())
    assert len(verdict["manifests"]) == (2 if "ingredient" in kind else 1)
    assert verdict["timeStampValid"] == ("time-stamp" in kind)
    # And c2pa-python agrees.
    report = ManifestReader(ca[0]).read(signed, f"image/{fmt.lower()}")
    assert report.valid and report.trusted
    assert report.time_stamp["validated"] == ("time-stamp" in kind)
    assert len(report.ingredients) == (1 if "ingredient" in kind else 0)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_c2pa_ts_and_c2pa_python_both_reject_tampered_files(ca: Any, tmp_path: Path, fmt: str) -> None:
    signed = sign(ca, fmt, "ingredient+time-stamp")
    mime = f"image/{fmt.lower()}"
    # Pixels: a byte of the compressed image data near the end (before PNG's IEND or JPEG's EOI).
    pixels = bytearray(signed)
    at = len(pixels) - 30
    pixels[at] = pixels[at] ^ 0x01 if pixels[at] < 0xFE else 0x10
    # Claim: its title, inside the signed claim.
    title = signed.index(b"provenance record r1")
    claim = signed[:title] + b"provenance record r2" + signed[title + 20 :]
    for name, data, code in (
        ("pixels", bytes(pixels), "assertion.dataHash.mismatch"),
        ("claim", claim, "claimSignature.mismatch"),
    ):
        path = tmp_path / f"{name}.{fmt.lower()}"
        path.write_bytes(data)
        verdict = c2pa_ts(path)
        assert not verdict["valid"], name
        assert code in {s["code"] for s in verdict["statuses"] if not s["success"]}, verdict["statuses"]
        assert not ManifestReader(ca[0]).read(data, mime).valid


def test_disagreement_c2pa_ts_0_9_4_rejects_spec_conformant_sigtst2(ca: Any, tmp_path: Path) -> None:
    """c2pa-rs is right: C2PA 2.x stores only the TimeStampToken in sigTst2 (GEN-CLAIMS-0023).

    Should this test fail after a c2pa-ts upgrade, the upgrade reads sigTst2 as the spec says:
    drop ``--accept-v2-timestamp-token`` from the script and this test.
    """
    path = tmp_path / "stamped.png"
    path.write_bytes(sign(ca, "PNG", "time-stamp"))
    raw = c2pa_ts(path, accept_token=False)
    assert not raw["valid"] and not raw["claimSignatureValid"]
    assert [(s["code"], s["explanation"]) for s in raw["statuses"]] == [
        ("signingCredential.invalid", "Failed to deserialize signature content")
    ]
    patched = c2pa_ts(path)
    assert patched["valid"] and patched["timeStampValid"] and patched["patchedTimestampTokens"] == 1
    assert ManifestReader(ca[0]).read(path.read_bytes(), "image/png").time_stamp["trusted"]


def test_disagreement_c2pa_ts_does_not_check_the_ingredient_binding(ca: Any, tmp_path: Path) -> None:
    """c2pa-python is right: the active claim binds the parent manifest by hash (ingredient.manifest.mismatch)."""
    signed = sign(ca, "PNG", "ingredient")
    at = signed.index(b"record_id\x68camera-1") + len(b"record_id\x68")
    tampered = signed[:at] + b"camera-2" + signed[at + 8 :]
    path = tmp_path / "swapped-parent.png"
    path.write_bytes(tampered)
    assert c2pa_ts(path)["valid"], "c2pa-ts 0.9.4 misses this; if it now catches it, update docs/how-it-works.md"
    report = ManifestReader(ca[0]).read(tampered, "image/png")
    assert not report.valid and any("ingredient.manifest.mismatch" in f for f in report.failures)
