"""Verification: the certification stages walked backwards, each reported on its own.

``Verifier.verify`` gathers evidence about an uploaded file (its hash, its C2PA manifest, its
watermark, its fingerprint), binds it to the certified original the service holds, then reads the
chain and IPFS live. Anything a public tool can read from a file (a mark, a manifest, a fingerprint)
can be copied into another file, so evidence only PROPOSES a record; the record is named when the
upload is checked against something an attacker cannot make:

- the exact SHA-256 of a certified file (conclusive: these are the certified bytes);
- a C2PA manifest that validates *and* chains to this service's trust anchor (strong);
- the decoded pixels being exactly the certified original's (conclusive about the picture: only the
  file around it changed);
- the keyed mark (only the service's secret key reads it) AND the content bound to the original:
  the upload, aligned to the record's certified original, shows that picture where they overlap
  (``provenance.marks.binding``). A mark found on other content is a copied mark: reported as
  ``copied_mark``, never as the record.

A manifest that fails validation, or is signed by anyone else, never names a record on its own; if
it claims one of this service's records whose pixels it does not carry, the verdict is ``invalid``.

Each check returns its model (``verify.checks``) and fills the ``Evidence`` (``verify.evidence``); the
``VerdictPolicy`` (``verify.policy``, a constructor slot) turns it into a verdict; ``VerificationResult``
(``verify.report``) is the answer. ``verify.blind_mark`` reads the mark, ``verify.search`` is the fingerprint
path, ``verify.originals`` the certified originals, ``verify.differences`` what a modified copy changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from provenance import media
from provenance.certify.certifier import Identification
from provenance.chain import Registry
from provenance.chain.devchain import development_chain_reason, is_development_chain
from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.errors import ProvenanceError
from provenance.ipfs import ContentStore
from provenance.ipfs.unixfs import compute_cid
from provenance.lineage.report import LineageChecker
from provenance.manifests.manifest import ManifestReader
from provenance.marks.fingerprint import Fingerprinter
from provenance.marks.fingerprint_backend import FingerprintBackend
from provenance.marks.watermark import Watermarker
from provenance.observability import metrics
from provenance.signing import sha256_hex, verify_signature
from provenance.verify.blind_mark import BlindMarkReader
from provenance.verify.checks import (
    BindingCheck,
    C2paCheck,
    ChainCheck,
    Checks,
    ExactCheck,
    FingerprintCheck,
    IpfsCheck,
    WatermarkCheck,
)
from provenance.verify.differences import DifferenceImages, describe_modification
from provenance.verify.evidence import Evidence, Via
from provenance.verify.originals import OriginalPictures
from provenance.verify.policy import DEFAULT_POLICY, FALSE_MATCH_BUDGET, MAX_CANDIDATE_RECORDS, VerdictPolicy
from provenance.verify.registration import Registration, check_registration
from provenance.verify.report import (
    INVALID,
    MODIFICATIONS,
    MODIFIED,
    MODIFIED_SUMMARIES,
    SUMMARIES,
    CopiedMark,
    ModificationDetail,
    Origin,
    Verdict,
    VerificationResult,
)
from provenance.verify.search import FingerprintSearch

# Kept importable from here, where they lived before the split.
__all__ = [
    "FALSE_MATCH_BUDGET",
    "MAX_CANDIDATE_RECORDS",
    "MODIFICATIONS",
    "Evidence",
    "VerdictPolicy",
    "VerificationResult",
    "Verifier",
]


class Verifier:
    """Walks the stages backwards. Components are slots: ``watermarker=None`` skips the mark.

    ``policy`` holds the verdict rules and the false-match budget (``VerdictPolicy()`` by default).
    """

    def __init__(
        self,
        *,
        repository: RecordRepository,
        manifest_reader: ManifestReader,
        store: ContentStore,
        registry: Registry,
        max_upload_bytes: int,
        max_pixels: int,
        watermarker: Watermarker | None = None,
        fingerprinter: Fingerprinter | None = None,
        fingerprint_index: FingerprintBackend | None = None,
        max_candidates: int = 8,
        structure_limits: media.StructureLimits | None = None,
        policy: VerdictPolicy = DEFAULT_POLICY,
        lineage: LineageChecker | None = None,
    ) -> None:
        self.repository = repository
        self.manifest_reader = manifest_reader
        self.structure_limits = structure_limits or media.STRUCTURE_LIMITS  # what an upload may carry besides pixels
        self.store = store
        self.registry = registry
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.watermarker = watermarker
        self.fingerprinter = fingerprinter
        self.fingerprint_index = fingerprint_index
        self.max_candidates = max_candidates
        self.policy = policy
        self.lineage = lineage  # None: no lineage section (generated images' models and datasets unchecked)
        self._differences = DifferenceImages()
        self._originals = OriginalPictures(store, repository, self.structure_limits)
        self._search = (
            FingerprintSearch(
                fingerprinter=fingerprinter,
                index=fingerprint_index,
                repository=repository,
                originals=self._originals,
                policy=policy,
                watermarker=watermarker,
                max_candidates=max_candidates,
            )
            if fingerprinter is not None and fingerprint_index is not None
            else None
        )
        self._mark_reader = BlindMarkReader(watermarker, repository) if watermarker is not None else None

    # Each check fills its part of the evidence and returns its report.
    def _check_exact(self, ev: Evidence) -> ExactCheck:
        ev.exact = self.repository.by_sha256(ev.sha256)
        if ev.exact is None:
            return ExactCheck(matched=False, sha256=ev.sha256)
        key = self.repository.public_key(ev.exact.key_id)
        ev.signature_valid = key is not None and verify_signature(key, ev.data, ev.exact.signature)
        return ExactCheck(
            matched=True,
            sha256=ev.sha256,
            record_id=ev.exact.id,
            key_id=ev.exact.key_id,
            signature=ev.exact.signature,
            signature_valid=ev.signature_valid,
        )

    def _check_c2pa(self, ev: Evidence) -> C2paCheck:
        ev.c2pa = self.manifest_reader.read(ev.data, ev.mime_type)
        report = C2paCheck.model_validate(ev.c2pa.as_dict())
        claimed = ev.c2pa.record_id
        if not claimed:
            return report
        if ev.c2pa.valid and ev.c2pa.trusted:
            ev.manifest_record = self.repository.get(claimed)
            if ev.manifest_record is None:
                report.note = f"the trusted manifest names record {claimed}, which this service does not hold"
            return report
        # An untrusted or broken manifest is anyone's words: it resolves to nothing on its own. Claiming one of
        # our records is checked against that record's certified pixels (see _check_binding).
        report.record_id = None
        report.claimed_record_id = claimed
        if self.repository.get(claimed) is not None:
            ev.claimed_by_untrusted_manifest = claimed
        return report

    def _check_watermark(self, ev: Evidence, rgb: np.ndarray) -> WatermarkCheck:
        if self._mark_reader is None:
            return WatermarkCheck(detected=False, method=None, record_id=None, reason="watermark reading disabled")
        return self._mark_reader.check(ev, rgb)

    def _check_binding(self, ev: Evidence, rgb: np.ndarray) -> BindingCheck:
        """Check what the manifest or the mark proposes against the certified original the service holds."""
        if ev.exact is not None:
            return BindingCheck(checked=False, reason="exact certified bytes")
        candidate: Record | None = None
        via: Via | None = None
        if ev.manifest_record is not None:
            candidate, via = ev.manifest_record, "manifest"
        elif ev.claimed_by_untrusted_manifest is not None:
            candidate, via = self.repository.get(ev.claimed_by_untrusted_manifest), "manifest_claim"
        elif ev.mark_record is not None:
            candidate, via = ev.mark_record, "mark"
        if candidate is None or via is None:
            return BindingCheck(checked=False, reason="no manifest or mark proposes a record")
        binding = self._originals.bind(candidate, via, rgb)
        report = BindingCheck(checked=True, candidate=candidate.id, via=via)
        if binding is None:
            report.reason = "the certified original cannot be read from the content store"
            return report
        if via == "manifest_claim" and not binding.pixels_identical:
            binding = None  # a broken or foreign manifest binds only the very pixels it claims
        ev.binding = binding
        if binding is None:
            report.show_unbound()
        else:
            binding.report_into(report)
        if via == "mark" and (binding is None or not binding.holds):
            ev.copied_mark = candidate
            report.copied_mark = True
        return report

    def _check_fingerprint(self, ev: Evidence, rgb: np.ndarray) -> FingerprintCheck:
        """Find the original when nothing else bound the upload (see ``provenance.verify.search``)."""
        if self._search is None:
            return FingerprintCheck(searched=False, reason="fingerprint lookup disabled")
        return self._search.check(ev, rgb)

    def difference_image(self, verification_id: str) -> bytes | None:
        """The PNG of a recent verification's differences, if this instance still holds it (waits for its rendering)."""
        return self._differences.get(verification_id)

    def close(self) -> None:
        """Stop the difference renderer (pending renderings are dropped)."""
        self._differences.close()

    def _check_chain(self, ev: Evidence) -> ChainCheck:
        """The registration, typed for the report and the verdict policy (also kept as ``ev.chain_check``)."""
        # Read live from the contract; the database only says where to look (which batch root). The registration
        # check is the bundle verifier's (provenance.verify.registration); its stricter findings (the registrant
        # was a writer at the block, the CID on chain is the record's) are reported here, not (yet) verdicts.
        record = ev.record
        queried = record.sha256 if ev.exact is None and record is not None else ev.sha256
        check = ev.chain_check = ChainCheck(
            chain_id=self.registry.chain_id, registry_address=self.registry.address, queried_sha256=queried
        )
        try:
            reg = check_registration(
                self.registry,
                queried,
                key_id=record.key_id if record is not None else None,
                cid=record.cid if record is not None else None,
                batch_root=record.batch_root if record is not None and record.batch_root else None,
                proof=(record.merkle_proof or []) if record is not None else None,
            )
        except Exception as exc:  # an unreachable RPC is a result, not a crash
            # Unknown, not False: the record may well be registered; the chain just cannot say so now.
            check.status = "unavailable"
            check.registered = None
            check.error = f"the chain cannot be read: {exc}"
            return check
        if record is not None and reg.mode == "batch":
            self._batch_entry(check, record, reg)
        else:
            check.mode = "single"
            check.registered = reg.found
            check.registrant = reg.registrant
            check.block_number = reg.block_number
            check.timestamp = reg.timestamp
            check.cid = reg.cid
            if reg.cid_matches is not None:
                check.cid_matches = reg.cid_matches
        if reg.registrant_was_writer is not None:
            check.registrant_was_writer = reg.registrant_was_writer
        if record is not None and reg.found and reg.block_number is not None:
            # The key that signed the record must have been published by the registry's owner, and not
            # revoked, when the record was registered.
            check.key_id = record.key_id
            check.key_valid = reg.key is not None and reg.key.valid_at_registration
        check.status = "ok"
        if record is not None:
            check.tx_hash = record.tx_hash
        return check

    def _batch_entry(self, check: ChainCheck, record: Record, reg: Registration) -> None:
        """Fill ``check`` for a record anchored in a Merkle batch (``proof_valid``: the contract's own answer)."""
        check.mode = "batch"
        check.registered = reg.found
        check.batch_root = record.batch_root
        check.proof = record.merkle_proof
        check.proof_valid = reg.contract_says_registered
        check.leaves_cid = reg.leaves_cid
        check.registrant = reg.registrant
        check.block_number = reg.block_number
        check.timestamp = reg.timestamp

    def _check_ipfs(self, ev: Evidence) -> IpfsCheck:
        cid = ev.record.cid if ev.record is not None else compute_cid(ev.data)
        try:
            pinned = self.store.has(cid)
            error = None
        except ProvenanceError as exc:
            pinned, error = False, exc.detail
        ev.ipfs = IpfsCheck(cid=cid, pinned=pinned, store=self.store.description)
        if ev.exact is None and ev.record is not None:
            ev.ipfs.note = "CID of the original certified file"
        if error:
            ev.ipfs.error = error
        return ev.ipfs

    def _describe(
        self, ev: Evidence, rgb: np.ndarray, record: Record
    ) -> tuple[ModificationDetail, Callable[[], bytes] | None]:
        """For a modified copy: the kind of modification, what changed and where (and how to draw the differences)."""
        binding = ev.binding if ev.binding is not None and ev.binding.record.id == record.id else None
        if binding is None:
            binding = self._originals.bind(record, "manifest", rgb)  # None when the original cannot be read
        return describe_modification(binding, rgb, ev.mime_type, record)

    def _origin(self, record: Record) -> Origin:
        """The record the content comes from first (a declared derivative's source) and its account."""
        derived = record.derived_from is not None
        source = self.repository.get(record.derived_from) if record.derived_from else None
        first = source or record
        return Origin(record_id=first.id, account=self.repository.account_name(first.account_id), derived=derived)

    def identify(self, data: bytes, rgb: np.ndarray, mime_type: str, *, owner: str | None) -> Identification:
        """What certify needs to know about an upload: the record its content already belongs to, if any.

        The same evidence as ``verify`` (exact hash, trusted manifest, a mark or fingerprint bound to the
        content, certified pixels under a broken manifest), without the chain and IPFS reads. Marks and
        fingerprint candidates of ``owner``'s own records are not followed: the owner may certify its own
        work again, so only other accounts' records matter (and a picture certified many times by one account
        costs nothing to look up).
        """
        # The blind read tries the upload as given only: a resized copy is found by the fingerprint path anyway, and
        # the three rescaled reads would double what certify costs for every new picture.
        ev = self.gather(data, rgb, mime_type, ignore=lambda record: record.account_id == owner, blind_factors=(1.0,))
        present = ev.c2pa is not None and ev.c2pa.present
        return Identification(record=ev.record, manifest_present=present)

    def gather(
        self,
        data: bytes,
        rgb: np.ndarray,
        mime_type: str,
        *,
        ignore: Callable[[Record], bool] | None = None,
        blind_factors: tuple[float, ...] | None = None,
    ) -> Evidence:
        """Everything short of the chain and IPFS: exact hash, manifest, mark, binding, fingerprint.

        ``ignore``: records a mark or a fingerprint may not propose.
        """
        ev = Evidence(
            data=data, mime_type=mime_type, sha256=sha256_hex(data), ignore=ignore, blind_factors=blind_factors
        )
        self._check_exact(ev)
        self._check_c2pa(ev)
        self._check_watermark(ev, rgb)
        self._check_binding(ev, rgb)
        self._check_fingerprint(ev, rgb)
        return ev

    def verify(self, data: bytes) -> VerificationResult:
        """Check ``data`` and return the full report (raises ``InputError`` for a non-image)."""
        timings: dict[str, float] = {}

        def timed(name: str, fn: Any, *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                timings[name] = (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        fmt, rgb = media.decode_rgb(
            data, max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels, limits=self.structure_limits
        )
        timings["decode"] = (time.perf_counter() - start) * 1000
        ev = Evidence(data=data, mime_type=media.FORMATS[fmt], sha256=sha256_hex(data))
        checks = Checks()
        checks.exact = timed("exact", self._check_exact, ev)
        checks.c2pa = timed("c2pa", self._check_c2pa, ev)
        checks.watermark = mark = timed("watermark", self._check_watermark, ev, rgb)
        checks.binding = timed("binding", self._check_binding, ev, rgb)
        named = ev.record
        if ev.mark_record is not None and named is not None and ev.mark_record.id == named.id:
            mark.record_id = named.id  # the mark's record, bound to the picture (or exact bytes)
        checks.fingerprint = timed("fingerprint", self._check_fingerprint, ev, rgb)
        checks.chain = timed("chain", self._check_chain, ev)
        checks.ipfs = timed("ipfs", self._check_ipfs, ev)
        verdict, record, reasons = self.policy.decide(ev)
        detail, verification_id = ModificationDetail(), None
        if verdict == MODIFIED and record is not None:
            detail, render = timed("difference", self._describe, ev, rgb, record)
            if render is not None:
                verification_id = self._differences.keep(render)
        metrics.VERDICTS.labels(verdict=verdict).inc()
        return self._result(ev, verdict, record, reasons, detail, verification_id, checks, timings)

    def _result(
        self,
        ev: Evidence,
        verdict: Verdict,
        record: Record | None,
        reasons: list[str],
        detail: ModificationDetail,
        verification_id: str | None,
        checks: Checks,
        timings: dict[str, float],
    ) -> VerificationResult:
        """The report: the verdict and its record, the evidence behind it, what was modified, every check."""
        if record is not None and verdict != INVALID and is_development_chain(self.registry.chain_id):
            reasons.append(development_chain_reason(self.registry.chain_id))
        evidence = ev.items() if verdict != INVALID else [i for i in ev.items() if i.kind == "exact_hash"]
        summary = MODIFIED_SUMMARIES[detail.modification] if detail.modification else SUMMARIES[verdict]
        copied = None
        if ev.copied_mark is not None and (record is None or record.id != ev.copied_mark.id):
            copied = CopiedMark(
                claimed_by_mark=ev.copied_mark.id,
                detail=f"The keyed mark of record {ev.copied_mark.id} was read, but the picture does not show that "
                "record's certified original: the mark was copied onto other content. This is not provenance.",
            )
        return VerificationResult(
            verdict=verdict,
            record_id=record.id if record else None,
            summary=summary,
            reasons=reasons,
            evidence=evidence,
            changes=detail.changes,
            modification=detail.modification,
            edited_regions=detail.edited_regions,
            contained_region=detail.contained_region,
            copied_mark=copied,
            origin=self._origin(record) if record is not None and verdict != INVALID else None,
            verification_id=verification_id,
            diff_url=f"/v1/verify/{verification_id}/diff.png" if verification_id else None,
            checks=checks,
            lineage=self.lineage.check(record) if self.lineage is not None and record is not None else None,
            timings_ms=timings,
        )
