"""A peer's test files: c2pa-rs's own fixtures (``tests/fixtures/c2pa-rs/README.md``) through the real service.

Each fixture is verified as it is, then certified, and the service's certified copy (the exact
bytes of ``GET /v1/records/{id}/image``) is verified once registered. The as-is verdict must agree
with c2pa-python's own reading of the file, under the same settings the service uses (offline,
our trust anchors only). The mapping:

- ``ManifestNotFound`` (no manifest): ``unknown``, state ``absent``.
- ``validation_state`` Valid or Trusted (a foreign manifest that checks): ``unknown``, state ``valid``
  (not signed by us).
- Invalid, where every failure of the active manifest is trust-level or needs the network
  (``cawg.ica.did_unavailable``: a did:web issuer): ``unknown``, state ``unverifiable``.
- Invalid otherwise: ``invalid``.
- a remote manifest (a ``Remote:`` reader error: it is never fetched) or a pre-release one:
  ``unknown``, state ``unverifiable``.
- any other reader error (the manifest cannot be read): ``invalid``.

The fixtures are not in this repository (they are c2pa-rs's files): they are read from the
steering repository's ``shared/c2pa-rs/`` beside the checkout, or from ``PROVENANCE_C2PA_RS_FIXTURES``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import c2pa
import pytest
from fastapi.testclient import TestClient

from provenance.manifests.manifest import TRUST_ONLY_FAILURES, c2pa_settings
from provenance.media import FORMATS, sniff_format
from provenance.runtime.services import Services
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "tests" / "fixtures" / "c2pa-rs" / "fixtures.sha256"
FIXTURES_DIR = Path(os.environ.get("PROVENANCE_C2PA_RS_FIXTURES") or ROOT.parent / "shared" / "c2pa-rs")
OFFLINE = {"cawg.ica.did_unavailable"}


def _listed() -> list[tuple[str, str]]:
    rows = [line.split(maxsplit=1) for line in LIST.read_text().splitlines() if line.strip()]
    return [(path.strip(), digest) for digest, path in rows]


FIXTURES = _listed()


def _id(path: str) -> str:
    return path.rsplit("fixtures/", 1)[-1]


def fixture_bytes(path: str, digest: str) -> bytes:
    file = FIXTURES_DIR / path
    assert file.is_file(), (
        f"{file} is missing: lay c2pa-rs's fixtures as tests/fixtures/c2pa-rs/README.md says "
        "(or point PROVENANCE_C2PA_RS_FIXTURES at them)"
    )
    data = file.read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest, f"{file} is not the listed c2pa-rs fixture"
    return data


def c2pa_python(services: Services, data: bytes) -> dict[str, Any]:
    """c2pa-python's own reading: {"error": ...} or {"state": ..., "failures": [codes of the active manifest]}."""
    fmt = sniff_format(data)
    assert fmt is not None
    with c2pa.Context(settings=c2pa_settings(services.credentials, thumbnail=False)) as context:
        try:
            with c2pa.Reader(FORMATS[fmt], io.BytesIO(data), None, context) as reader:
                store = json.loads(reader.json())
        except c2pa.C2paError as exc:
            return {"error": type(exc).__name__, "message": str(exc)}
    active = (store.get("validation_results") or {}).get("activeManifest") or {}
    return {"state": store.get("validation_state"), "failures": [f["code"] for f in active.get("failure") or []]}


def expected_verdict(reading: dict[str, Any]) -> tuple[str, str]:
    """(verdict, c2pa state) for the file as it is, from c2pa-python's reading (the table above)."""
    if "error" in reading:
        message = reading["message"]
        if "ManifestNotFound" in reading["error"]:
            return "unknown", "absent"
        if message.startswith("Remote:") or "prerelease" in message.lower():
            return "unknown", "unverifiable"
        return "invalid", "invalid"
    if reading["state"] in ("Valid", "Trusted"):
        return "unknown", "valid"
    failures = set(reading["failures"]) - TRUST_ONLY_FAILURES
    if failures and failures <= OFFLINE:
        return "unknown", "unverifiable"
    return "invalid", "invalid"


def verify(client: TestClient, data: bytes) -> dict[str, Any]:
    response = client.post("/v1/verify", files={"file": ("upload", data)})
    assert response.status_code < 500, response.text
    assert response.status_code == 200, response.text
    return response.json()


# Certified copies, filled by the certify test and checked by the one after it (file order is kept).
CERTIFIED: dict[str, dict[str, Any]] = {}


@pytest.mark.parametrize(("path", "digest"), FIXTURES, ids=[_id(p) for p, _ in FIXTURES])
def test_fixture_as_is_agrees_with_c2pa_python(client: TestClient, services: Services, path: str, digest: str) -> None:
    """Runs for every fixture before any is certified, so no record of ours can resemble it."""
    data = fixture_bytes(path, digest)
    reading = c2pa_python(services, data)
    verdict, state = expected_verdict(reading)
    result = verify(client, data)
    report = result["checks"]["c2pa"]
    assert result["verdict"] != "authentic" and result["record_id"] is None, result
    assert report["record_id"] is None
    assert report["state"] == state, (reading, report)
    assert result["verdict"] == verdict, (reading, result["verdict"], result["reasons"])
    if state == "unverifiable":
        assert any("cannot be checked" in reason for reason in result["reasons"]), result["reasons"]


@pytest.mark.parametrize(("path", "digest"), FIXTURES, ids=[_id(p) for p, _ in FIXTURES])
def test_certify_answers_201_or_4xx(client: TestClient, services: Services, path: str, digest: str) -> None:
    data = fixture_bytes(path, digest)
    response = client.post("/v1/certify", files={"file": (Path(path).name, data)})
    assert response.status_code < 500, response.text
    if response.status_code != 201:
        assert response.status_code >= 400 and "error" in response.json(), response.text
        return
    record_id = response.json()["record_id"]
    CERTIFIED[path] = {"record_id": record_id, "reading": c2pa_python(services, data)}


@pytest.mark.parametrize("path", [p for p, _ in FIXTURES], ids=[_id(p) for p, _ in FIXTURES])
def test_the_certified_copy_is_authentic_and_the_parent_keeps_its_failures(client: TestClient, path: str) -> None:
    if path not in CERTIFIED:
        pytest.fail(f"{path} was not certified (see test_certify_answers_201_or_4xx)")
    certified = CERTIFIED[path]
    record_id = certified["record_id"]
    image = client.get(f"/v1/records/{record_id}/image").content

    def registered() -> dict[str, Any] | None:
        record = client.get(f"/v1/records/{record_id}").json()
        return record if record["status"] == "registered" else None

    record = wait_for(registered)
    result = verify(client, image)
    report = result["checks"]["c2pa"]
    assert result["verdict"] == "authentic" and result["record_id"] == record_id, result["reasons"]
    assert report["state"] == "trusted" and report["valid"] and report["trusted"], report
    assert report["failures"] == [], report["failures"]
    assert report["summary"]["actions"][0]["digitalSourceType"] is None  # no source type was stated

    reading = certified["reading"]
    [parent] = report["ingredients"]  # the upload's manifest, or the upload itself when it had none we keep
    assert parent["relationship"] == "parentOf"
    if "error" in reading or not parent["has_manifest"]:
        # No manifest, or one that could not be kept: certified without that history, and the record says why.
        assert not parent["has_manifest"]
        if "error" not in reading or "ManifestNotFound" not in reading["error"]:
            assert record["certify_note"], record
        return
    assert record["certify_note"] is None
    # What c2pa-python found wrong with the upload's manifest is listed under the ingredient, not ours.
    assert set(reading["failures"]) <= set(parent["failures"]), (reading, parent["failures"])
    assert parent["state"] != "trusted"
