"""The verdict policy: the rules that turn evidence into a verdict, and the thresholds they use.

``VerdictPolicy`` is passed into the ``Verifier`` (as sigstore-python passes a ``VerificationPolicy``); its
defaults are the service's policy:

- ``invalid``: pixels that differ under a manifest that fails validation, a manifest that claims a record it
  cannot back, a record signature that does not check, or a signing key not valid at the registration block;
- ``authentic``: exactly the certified bytes, signature valid, registered on chain;
- ``pending``: exactly the certified bytes, signature valid, not yet registered on chain;
- ``unavailable``: exactly the certified bytes, signature valid, but the chain cannot be read now;
- ``modified``: bound to a record but the bytes differ;
- ``unknown``: nothing binds the upload to a record (a copied mark says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from provenance.db.models import Record
from provenance.verify.checks import ChainCheck
from provenance.verify.evidence import Binding, Evidence
from provenance.verify.report import AUTHENTIC, INVALID, MODIFIED, PENDING, UNAVAILABLE, UNKNOWN, Verdict

# At most this chance per image that an unmarked image, or one marked for another record, is confirmed as a
# fingerprint candidate's record.
FALSE_MATCH_BUDGET = 1e-6
# Fingerprint candidates: at most this many records, of at most ``Verifier.max_candidates`` distinct pictures.
MAX_CANDIDATE_RECORDS = 32


class Decision(NamedTuple):
    """A verdict, the record it names (None: none), and why."""

    verdict: Verdict
    record: Record | None
    reasons: list[str]


def container_reasons(ev: Evidence) -> list[str]:
    """Why an upload with the certified pixels in another file is ``modified`` (container), not invalid."""
    reasons = ["the decoded pixels are exactly the certified original's: only the file around them changed"]
    c2pa = ev.c2pa
    if c2pa is not None and c2pa.present and not (c2pa.valid and c2pa.trusted):
        failures = "; ".join(c2pa.failures) or "not signed by this service"
        reasons.append(f"the file's C2PA manifest no longer checks (as expected once the file changed): {failures}")
    elif c2pa is not None and not c2pa.present:
        reasons.append("the file carries no C2PA manifest (stripped)")
    return reasons


def _failing_manifest(ev: Evidence) -> bool:
    """A manifest that is present and fails validation (one that cannot be checked here does not fail)."""
    c2pa = ev.c2pa
    return c2pa is not None and c2pa.present and not c2pa.valid and c2pa.state != "unverifiable"


def _manifest_failures(ev: Evidence) -> str:
    assert ev.c2pa is not None
    return "the C2PA manifest fails validation: " + ("; ".join(ev.c2pa.failures) or "no reason given")


@dataclass(frozen=True)
class VerdictPolicy:
    """The thresholds of verification and the rules of the verdict, in the order they are applied."""

    false_match_budget: float = FALSE_MATCH_BUDGET
    max_candidate_records: int = MAX_CANDIDATE_RECORDS

    def confirmation_threshold(self, candidates: int) -> float:
        """The p-value a mark confirmation must reach: every candidate tried shares the per-image budget."""
        return self.false_match_budget / max(1, candidates)

    def decide(self, ev: Evidence) -> Decision:
        """The verdict over the evidence: (verdict, the record it names, reasons)."""
        if ev.claimed_by_untrusted_manifest is not None and ev.exact is None:
            return self.untrusted_claim(ev)
        if _failing_manifest(ev) and ev.exact is None:
            return self.failing_manifest(ev)
        if ev.exact is not None:
            return self.exact_bytes(ev, ev.exact)
        if ev.bound is not None:
            return self.bound(ev, ev.bound)
        if ev.manifest_record is not None:
            reasons = ["a trusted manifest names the record, but the bytes are not the certified ones"]
            return Decision(MODIFIED, ev.manifest_record, reasons)
        return self.unbound(ev)

    def untrusted_claim(self, ev: Evidence) -> Decision:
        """A manifest not signed by this service claims one of its records: only the very pixels back it."""
        bound, claimed, c2pa = ev.bound, ev.claimed_by_untrusted_manifest, ev.c2pa
        if bound is not None and bound.pixels_identical and bound.record.id == claimed:
            return Decision(MODIFIED, bound.record, container_reasons(ev))
        reason = (
            f"a manifest claims record {claimed} of this service but its signer is not trusted"
            + ("" if c2pa is None or c2pa.valid else " and it fails validation")
            + ", and the picture is not that record's certified original"
        )
        # A forged claim must never lend its target.
        return Decision(INVALID, None, [reason])

    def failing_manifest(self, ev: Evidence) -> Decision:
        """Not the certified bytes, under a manifest that fails validation: invalid unless the pixels are certified."""
        bound = ev.bound
        if bound is not None and bound.pixels_identical:
            return Decision(MODIFIED, bound.record, container_reasons(ev))
        return Decision(INVALID, None, [_manifest_failures(ev)])

    def exact_bytes(self, ev: Evidence, record: Record) -> Decision:
        """The certified bytes: the manifest, the signature, the key and the registration decide."""
        if _failing_manifest(ev):
            return Decision(INVALID, record, [_manifest_failures(ev)])
        if not ev.signature_valid:
            return Decision(INVALID, record, ["the record's ECDSA signature does not check against its key"])
        chain = ev.chain_check or ChainCheck()
        reasons = [chain.error] if chain.error else []
        if chain.registered and chain.key_valid is False:
            reasons.append("the signing key was not published, or was revoked, at the registration block")
            return Decision(INVALID, record, reasons)
        if chain.status == "unavailable":  # never "pending" for what may well be registered
            return Decision(UNAVAILABLE, record, reasons)
        if chain.registered:
            reasons.append("exact certified bytes, valid signature, registered on chain")
            return Decision(AUTHENTIC, record, reasons)
        reasons.append("exact certified bytes and valid signature; not (yet) registered on chain")
        return Decision(PENDING, record, reasons)

    def bound(self, ev: Evidence, bound: Binding) -> Decision:
        """Not the certified bytes, but the upload shows a record's certified picture: modified."""
        if bound.pixels_identical:
            return Decision(MODIFIED, bound.record, container_reasons(ev))
        if bound.via == "fingerprint":
            reasons = [
                "a fingerprint proposed the record and the keyed mark, read after aligning the upload to the "
                "certified original, confirms it"
            ]
        elif bound.via == "mark":
            reasons = ["the keyed watermark names the record"]
        else:
            reasons = ["a trusted manifest names the record"]
        reasons.append("aligned to the certified original, the upload shows its content; the bytes differ")
        return Decision(MODIFIED, bound.record, reasons)

    def unbound(self, ev: Evidence) -> Decision:
        """Nothing ties the upload to a record: unknown, saying what was seen (a foreign manifest, a copied mark)."""
        reasons: list[str] = []
        c2pa = ev.c2pa
        if c2pa is not None and c2pa.state == "unverifiable":
            reasons.append(
                "the file's C2PA manifest cannot be checked here (it is remote, or refers to what is missing)"
            )
        elif c2pa is not None and c2pa.present and not c2pa.trusted:
            reasons.append("the image has a valid C2PA manifest, but not one signed by this service")
        if ev.copied_mark is not None:
            reasons.append(
                f"a mark of record {ev.copied_mark.id} was found, but on content that is not that record's picture "
                "(a copied mark): it says nothing about where this image comes from"
            )
            return Decision(UNKNOWN, None, reasons)
        reasons.append("no exact match, no trusted manifest, no watermark of this service on its own picture")
        return Decision(UNKNOWN, None, reasons)


DEFAULT_POLICY = VerdictPolicy()
