"""The verdict policy on its own: every rule of ``VerdictPolicy.decide`` from evidence built by hand.

No service runs for the rule tests: records, manifest reports, bindings and chain reports are built directly,
so each rule is checked with exactly the evidence it reads. The last tests build a ``Verifier`` from its parts
(with a policy of their own) and read the OpenAPI document of the verification report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from provenance.certify.certifier import CertifyOptions
from provenance.db.models import Record
from provenance.manifests.manifest import ManifestReport
from provenance.marks.binding import Box, ContentComparison
from provenance.runtime.services import Services
from provenance.verify.checks import ChainCheck, Checks, ExactCheck, FingerprintCheck
from provenance.verify.evidence import Binding, Evidence, Via
from provenance.verify.policy import FALSE_MATCH_BUDGET, VerdictPolicy
from provenance.verify.verifier import Verifier
from tests.conftest import decode, encode, photo

POLICY = VerdictPolicy()
PIXELS = np.zeros((4, 4, 3), dtype=np.uint8)
# A comparison that binds (the upload shows the original), and one that does not.
MATCHING = ContentComparison(correlation=0.95, unchanged_share=0.9, cells_compared=100, threshold=20.0)
NOT_MATCHING = ContentComparison(correlation=0.05, unchanged_share=0.1, cells_compared=100, threshold=20.0)


def record(record_id: str = "rec1") -> Record:
    """A certified record as the repository returns it (only what the policy reads matters)."""
    return Record(id=record_id, sha256="ab" * 32, cid="bafy", signature="sig", key_id="key1", media_type="image/png")


def evidence(**fields: Any) -> Evidence:
    return Evidence(data=b"upload", mime_type="image/png", sha256="cd" * 32, **fields)


def bound(rec: Record, via: Via, *, identical: bool = False, comparison: ContentComparison = MATCHING) -> Binding:
    if identical:
        return Binding(rec, via, PIXELS, pixels_identical=True)
    return Binding(rec, via, PIXELS, comparison=comparison)


TRUSTED = ManifestReport(present=True, valid=True, trusted=True, record_id="rec1")
FOREIGN = ManifestReport(present=True, valid=True, trusted=False)  # valid, signed by someone else
BROKEN = ManifestReport(present=True, valid=False, failures=["assertion.dataHash.mismatch"])
REMOTE = ManifestReport(present=True, state="unverifiable", failures=["manifest.remote: stored remotely"])
ABSENT = ManifestReport(present=False)


# ---------- a manifest that claims one of our records without our signature ----------


def test_untrusted_claim_over_other_pixels_is_invalid_and_names_nothing() -> None:
    ev = evidence(c2pa=FOREIGN, claimed_by_untrusted_manifest="rec1")
    verdict, named, reasons = POLICY.decide(ev)
    assert (verdict, named) == ("invalid", None)
    assert "claims record rec1" in reasons[0] and "signer is not trusted" in reasons[0]
    assert "fails validation" not in reasons[0]


def test_untrusted_claim_under_a_broken_manifest_says_so() -> None:
    ev = evidence(c2pa=BROKEN, claimed_by_untrusted_manifest="rec1")
    verdict, named, reasons = POLICY.decide(ev)
    assert (verdict, named) == ("invalid", None) and "and it fails validation" in reasons[0]


def test_untrusted_claim_even_with_content_bound_by_a_mark_is_invalid() -> None:
    """Only the very pixels back a foreign claim: content that merely resembles the record does not."""
    rec = record()
    ev = evidence(c2pa=FOREIGN, claimed_by_untrusted_manifest="rec1", binding=bound(rec, "mark"))
    assert POLICY.decide(ev).verdict == "invalid"


def test_untrusted_claim_over_the_certified_pixels_is_a_container_change() -> None:
    rec = record()
    ev = evidence(
        c2pa=BROKEN, claimed_by_untrusted_manifest="rec1", binding=bound(rec, "manifest_claim", identical=True)
    )
    verdict, named, reasons = POLICY.decide(ev)
    assert (verdict, named) == ("modified", rec)
    assert reasons[0].startswith("the decoded pixels are exactly the certified original's")
    assert "no longer checks" in reasons[1] and "assertion.dataHash.mismatch" in reasons[1]


# ---------- a manifest that fails validation ----------


def test_failing_manifest_over_other_bytes_is_invalid() -> None:
    verdict, named, reasons = POLICY.decide(evidence(c2pa=BROKEN))
    assert (verdict, named) == ("invalid", None)
    assert reasons == ["the C2PA manifest fails validation: assertion.dataHash.mismatch"]


def test_failing_manifest_over_certified_pixels_is_a_container_change() -> None:
    rec = record()
    verdict, named, _ = POLICY.decide(evidence(c2pa=BROKEN, binding=bound(rec, "mark", identical=True)))
    assert (verdict, named) == ("modified", rec)


def test_unverifiable_manifest_is_not_a_failure() -> None:
    verdict, named, reasons = POLICY.decide(evidence(c2pa=REMOTE))
    assert (verdict, named) == ("unknown", None)
    assert "cannot be checked here" in reasons[0]


# ---------- the exact certified bytes ----------


def test_exact_bytes_registered_with_a_valid_key_are_authentic() -> None:
    rec = record()
    chain = ChainCheck(status="ok", registered=True, block_number=7, key_valid=True)
    verdict, named, reasons = POLICY.decide(evidence(exact=rec, signature_valid=True, c2pa=TRUSTED, chain_check=chain))
    assert (verdict, named) == ("authentic", rec)
    assert reasons == ["exact certified bytes, valid signature, registered on chain"]


def test_exact_bytes_not_registered_are_pending() -> None:
    rec = record()
    chain = ChainCheck(status="ok", registered=False)
    assert POLICY.decide(evidence(exact=rec, signature_valid=True, chain_check=chain)).verdict == "pending"
    # No chain report at all reads as not registered, never as authentic.
    assert POLICY.decide(evidence(exact=rec, signature_valid=True)).verdict == "pending"


def test_exact_bytes_when_the_chain_cannot_be_read_are_unavailable_never_pending() -> None:
    rec = record()
    chain = ChainCheck(status="unavailable", registered=None, error="the chain cannot be read: refused")
    verdict, named, reasons = POLICY.decide(evidence(exact=rec, signature_valid=True, chain_check=chain))
    assert (verdict, named, reasons) == ("unavailable", rec, ["the chain cannot be read: refused"])


def test_exact_bytes_signed_by_a_key_not_valid_at_the_block_are_invalid() -> None:
    rec = record()
    chain = ChainCheck(status="ok", registered=True, block_number=7, key_valid=False)
    verdict, named, reasons = POLICY.decide(evidence(exact=rec, signature_valid=True, chain_check=chain))
    assert (verdict, named) == ("invalid", rec) and "was revoked" in reasons[-1]


def test_exact_bytes_with_a_bad_signature_are_invalid() -> None:
    rec = record()
    chain = ChainCheck(status="ok", registered=True, key_valid=True)
    verdict, named, reasons = POLICY.decide(evidence(exact=rec, signature_valid=False, chain_check=chain))
    assert (verdict, named) == ("invalid", rec) and "signature does not check" in reasons[0]


def test_exact_bytes_under_a_failing_manifest_are_invalid() -> None:
    rec = record()
    chain = ChainCheck(status="ok", registered=True, key_valid=True)
    verdict, named, _ = POLICY.decide(evidence(exact=rec, signature_valid=True, c2pa=BROKEN, chain_check=chain))
    assert (verdict, named) == ("invalid", rec)


# ---------- bound to a certified original, other bytes ----------


@pytest.mark.parametrize(
    ("via", "first_reason"),
    [
        ("fingerprint", "a fingerprint proposed the record and the keyed mark"),
        ("mark", "the keyed watermark names the record"),
        ("manifest", "a trusted manifest names the record"),
    ],
)
def test_bound_content_is_modified_and_says_what_bound_it(via: Via, first_reason: str) -> None:
    rec = record()
    verdict, named, reasons = POLICY.decide(evidence(binding=bound(rec, via)))
    assert (verdict, named) == ("modified", rec)
    assert reasons[0].startswith(first_reason) and "the bytes differ" in reasons[1]


def test_certified_pixels_in_another_file_are_a_container_change() -> None:
    rec = record()
    verdict, named, reasons = POLICY.decide(evidence(c2pa=ABSENT, binding=bound(rec, "fingerprint", identical=True)))
    assert (verdict, named) == ("modified", rec)
    assert reasons[1] == "the file carries no C2PA manifest (stripped)"


def test_a_binding_that_does_not_hold_names_nothing() -> None:
    rec = record()
    ev = evidence(binding=bound(rec, "mark", comparison=NOT_MATCHING), copied_mark=rec)
    verdict, named, reasons = POLICY.decide(ev)
    assert (verdict, named) == ("unknown", None) and "(a copied mark)" in reasons[0]


def test_trusted_manifest_without_binding_is_modified() -> None:
    rec = record()
    verdict, named, reasons = POLICY.decide(evidence(c2pa=TRUSTED, manifest_record=rec))
    assert (verdict, named) == ("modified", rec) and "not the certified ones" in reasons[0]


def test_a_composite_is_bound_like_any_content() -> None:
    rec = record()
    composite = ContentComparison(
        correlation=0.95,
        unchanged_share=0.9,
        cells_compared=100,
        threshold=20.0,
        contained_region=Box(0, 0, 2, 2, 0.25),
    )
    binding = bound(rec, "fingerprint", comparison=composite)
    assert binding.kind == "composite"
    assert POLICY.decide(evidence(binding=binding)).verdict == "modified"


# ---------- nothing binds ----------


def test_a_foreign_manifest_alone_is_unknown() -> None:
    verdict, named, reasons = POLICY.decide(evidence(c2pa=FOREIGN))
    assert (verdict, named) == ("unknown", None)
    assert reasons[0] == "the image has a valid C2PA manifest, but not one signed by this service"


def test_nothing_at_all_is_unknown() -> None:
    verdict, named, reasons = POLICY.decide(evidence(c2pa=ABSENT))
    assert (verdict, named) == ("unknown", None)
    assert reasons == ["no exact match, no trusted manifest, no watermark of this service on its own picture"]


# ---------- thresholds ----------


def test_the_false_match_budget_is_split_among_the_candidates() -> None:
    assert POLICY.false_match_budget == FALSE_MATCH_BUDGET
    assert POLICY.confirmation_threshold(0) == FALSE_MATCH_BUDGET
    assert POLICY.confirmation_threshold(4) == pytest.approx(FALSE_MATCH_BUDGET / 4)
    assert VerdictPolicy(false_match_budget=1e-9).confirmation_threshold(10) == pytest.approx(1e-10)


# ---------- a Verifier built from its parts ----------


def test_a_verifier_built_from_its_parts_uses_the_policy_it_is_given(services: Services) -> None:
    parts = services.verifier
    policy = VerdictPolicy(false_match_budget=1e-9)
    verifier = Verifier(
        repository=parts.repository,
        manifest_reader=parts.manifest_reader,
        store=parts.store,
        registry=parts.registry,
        max_upload_bytes=parts.max_upload_bytes,
        max_pixels=parts.max_pixels,
        watermarker=parts.watermarker,
        fingerprinter=parts.fingerprinter,
        fingerprint_index=parts.fingerprint_index,
        policy=policy,
    )
    try:
        picture = photo("chelsea.png")[:256, :256]
        certified = services.certifier.certify(encode(picture), CertifyOptions(source_type="digitalCapture"))
        exact = verifier.verify(certified.data)
        assert exact.verdict in ("authentic", "pending") and exact.record_id == certified.record.id
        assert isinstance(exact.checks, Checks) and isinstance(exact.checks.exact, ExactCheck)
        assert exact.checks.exact.matched and exact.checks.exact.signature_valid
        # A crop is found by the fingerprint and confirmed within this policy's budget, split among candidates.
        crop = encode(decode(certified.data)[24:232, 16:240])
        result = verifier.verify(crop)
        fingerprint = result.checks.fingerprint
        assert isinstance(fingerprint, FingerprintCheck) and fingerprint.searched
        assert fingerprint.confirmation_threshold is not None
        shares = policy.false_match_budget / fingerprint.confirmation_threshold
        assert shares == pytest.approx(round(shares)) and 1 <= round(shares) <= policy.max_candidate_records
        assert result.verdict == "modified" and result.record_id == certified.record.id
    finally:
        verifier.close()


# ---------- the OpenAPI document ----------


def _free_form(schema: Any, path: str, found: list[str]) -> None:
    """Collect the places where ``schema`` allows objects with keys it does not describe."""
    if isinstance(schema, dict):
        extra = schema.get("additionalProperties")
        if (
            extra is True
            or extra == {}
            or (schema.get("type") == "object" and "properties" not in schema and not extra)
        ):
            found.append(path)
        for key, value in schema.items():
            _free_form(value, f"{path}/{key}", found)
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            _free_form(value, f"{path}/{index}", found)


def _reachable(components: dict[str, Any], name: str, seen: set[str]) -> None:
    if name in seen:
        return
    seen.add(name)
    text = repr(components[name])
    for other in components:
        if f"'#/components/schemas/{other}'" in text:
            _reachable(components, other, seen)


def test_openapi_describes_every_check_field(client: TestClient) -> None:
    components = client.app.openapi()["components"]["schemas"]  # type: ignore[attr-defined]
    report = next(name for name in components if name.startswith("VerificationResult"))
    checks = components[report]["properties"]["checks"]
    assert checks == {"$ref": "#/components/schemas/Checks", "description": checks["description"]}
    described = components["Checks"]["properties"]
    for check in ("exact", "c2pa", "watermark", "binding", "fingerprint", "chain", "ipfs"):
        assert check in described, check
    assert {"candidates", "weak_matches", "confirmation_threshold"} <= set(components["FingerprintCheck"]["properties"])
    assert {"registered", "key_valid", "status"} <= set(components["ChainCheck"]["properties"])
    seen: set[str] = set()
    _reachable(components, report, seen)
    assert {"ExactCheck", "C2paCheck", "WatermarkCheck", "FingerprintCandidate", "IpfsCheck"} <= seen
    found: list[str] = []
    for name in seen:
        _free_form(components[name], name, found)
    assert found == [], f"free-form objects in the verification report: {found}"
