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

The verdict is a small policy (``decide``) over that evidence:

- ``invalid``: pixels that differ under a manifest that fails validation, a manifest that claims a
  record it cannot back, or a record signature that does not check;
- ``authentic``: exactly the certified bytes, signature valid, registered on chain;
- ``pending``: exactly the certified bytes, signature valid, not yet registered on chain;
- ``modified``: bound to a record but the bytes differ, with the kind of modification (``container``,
  ``transformed``, ``edited`` with regions, ``composite`` with the region it contains);
- ``unknown``: nothing binds the upload to a record (a copied mark says so).
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from provenance import media
from provenance.certify.certifier import Identification
from provenance.chain import Registry
from provenance.chain.devchain import development_chain_reason, is_development_chain
from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.errors import ProvenanceError
from provenance.ipfs import ContentStore
from provenance.ipfs.unixfs import compute_cid
from provenance.manifests.manifest import ManifestReader, ManifestReport
from provenance.marks import watermark
from provenance.marks.align import Alignment, align, describe_changes, difference_png, direct_alignment, features
from provenance.marks.binding import ContentComparison, compare, pixels_identical
from provenance.marks.confirm import MarkConfirmation, confirm_mark
from provenance.marks.fingerprint import Fingerprinter, FingerprintIndex
from provenance.marks.luma import LumaReference
from provenance.marks.watermark import Detection, Watermarker
from provenance.signing import sha256_hex, verify_signature

logger = logging.getLogger(__name__)

# Decoded originals kept per instance: 16 1024x1024 pictures (48 MB of uint8 values).
ORIGINAL_CACHE_VALUES = 16 * 1024 * 1024 * 3

AUTHENTIC, PENDING, MODIFIED, UNKNOWN, INVALID = "authentic", "pending", "modified", "unknown", "invalid"
UNAVAILABLE = "unavailable"  # exact certified bytes, but the chain cannot be read to say authentic or pending
Verdict = Literal["authentic", "pending", "modified", "unknown", "invalid", "unavailable"]
DIFF_CACHE_SIZE = 256  # difference images kept for GET /v1/verify/{id}/diff.png
# Difference images are rendered after the answer, on one background thread (a 1024x1024 PNG costs ~50 ms, which no
# verdict needs). When this many are waiting, the next one is rendered inline: memory stays bounded under load.
MAX_PENDING_DIFFS = 4
# At most this chance per image that an unmarked image, or one marked for another record, is confirmed as a
# fingerprint candidate's record.
FALSE_MATCH_BUDGET = 1e-6
# Fingerprint candidates: at most this many records, of at most ``Verifier.max_candidates`` distinct pictures.
MAX_CANDIDATE_RECORDS = 32

SUMMARIES: dict[str, str] = {
    AUTHENTIC: "These are exactly the certified bytes: the signature checks and the hash is registered on chain.",
    PENDING: "These are exactly the certified bytes and the signature checks; the chain registration is in flight.",
    MODIFIED: "This image comes from a certified original, but its bytes differ (re-encoded, resized or edited).",
    UNKNOWN: "Nothing trustworthy links this image to a record of this service.",
    INVALID: "The image carries provenance evidence that does not hold up.",
    UNAVAILABLE: "These are exactly the certified bytes and the signature checks, but the chain cannot be read "
    "right now to confirm the registration: retry later.",
}


class EvidenceItem(BaseModel):
    """One piece of evidence that links the image to a record, and how much it proves."""

    kind: Literal["exact_hash", "c2pa_manifest", "pixels", "content", "watermark", "fingerprint"]
    strength: Literal["conclusive", "strong", "probabilistic", "weak"] = Field(
        description="conclusive: the certified bytes; strong: a trusted signature over them; "
        "probabilistic: a statistical reading (see false_positive_probability); weak: similarity only, "
        "never enough to name a record on its own."
    )
    record_id: str
    detail: str
    bit_errors: int | None = None
    false_positive_probability: float | None = Field(
        default=None, description="Chance that an image without this mark reads this way (watermark only)."
    )
    distance: int | None = Field(default=None, description="Fingerprint Hamming distance, of 64 bits.")


class Region(BaseModel):
    """A rectangle of the upload, in its own pixels: ``box`` is (x0, y0, x1, y1), end exclusive."""

    box: tuple[int, int, int, int]
    share: float = Field(description="Share of the upload's area the region covers, 0..1.")


class CopiedMark(BaseModel):
    """A mark of a certified record found on content that is not that record's picture."""

    claimed_by_mark: str = Field(description="The record whose mark was read; NOT the origin of this image.")
    detail: str


class Origin(BaseModel):
    """Who the content comes from first: the record itself, or the original a derivative declared."""

    record_id: str
    account: str | None = Field(default=None, description="Name of the account that certified the original.")
    derived: bool = Field(default=False, description="True when the named record is a declared derivative's source.")


Modification = Literal["container", "transformed", "edited", "composite"]
MODIFIED_SUMMARIES: dict[str, str] = {
    "container": "The picture is exactly the certified original's; only the file around it changed.",
    "transformed": "This is a copy of a certified original that was only transformed: it still shows what was "
    "certified.",
    "edited": "This image comes from a certified original, but parts of it were changed locally.",
    "composite": "This image contains a region of a certified image, placed into another picture.",
}
MODIFICATIONS: dict[str, str] = {
    "container": "The pixels are exactly the certified ones; only the file around them changed "
    "(metadata, chunks, bytes appended, manifest stripped).",
    "transformed": "The picture still shows what was certified: it was only re-encoded, resized, cropped, rotated, "
    "flipped or colour- or light-adjusted.",
    "edited": "Parts of the picture were changed locally: the regions listed differ from the certified original.",
    "composite": "A region of a certified image was placed into another picture.",
}


class VerificationResult(BaseModel):
    """The one verification report: the API returns it, the CLI prints it, the web page renders it."""

    verdict: Verdict
    record_id: str | None = Field(description="The record the trusted evidence leads to, if any.")
    summary: str = Field(description="One sentence on what the verdict means.")
    reasons: list[str] = Field(default_factory=list, description="Why the verdict is what it is.")
    evidence: list[EvidenceItem] = Field(default_factory=list, description="Strongest first.")
    changes: list[str] = Field(
        default_factory=list, description="For a modified copy: what was done to the original (scale, crop, ...)."
    )
    modification: Modification | None = Field(
        default=None,
        description="For a modified copy: container (pixels untouched), transformed (geometry, light, "
        "re-encoding only), edited (local edits, see edited_regions) or composite (see contained_region).",
    )
    edited_regions: list[Region] = Field(
        default_factory=list, description="Regions of the upload whose content differs from the original."
    )
    contained_region: Region | None = Field(
        default=None, description="For a composite: where the certified record's content sits in the upload."
    )
    copied_mark: CopiedMark | None = Field(
        default=None, description="A record's mark was found on content that is not that record's: a copied mark."
    )
    origin: Origin | None = Field(default=None, description="The account and record the content originates from.")
    verification_id: str | None = Field(default=None, description="Names this report's difference image.")
    diff_url: str | None = Field(
        default=None, description="Where the upload differs from the certified original, once aligned (PNG)."
    )
    checks: dict[str, dict[str, Any]] = Field(
        description="c2pa, exact, watermark, fingerprint, chain, ipfs: each on its own."
    )
    timings_ms: dict[str, float] = Field(default_factory=dict, exclude=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass
class Binding:
    """The upload tied to a record's certified original, and how.

    ``pixels_identical``: the decoded pictures are the same (only the file changed). Otherwise
    ``comparison`` says whether, once aligned, the upload shows the original's content.
    """

    record: Record
    via: Literal["manifest", "manifest_claim", "mark", "fingerprint"]
    original_rgb: np.ndarray
    pixels_identical: bool = False
    alignment: Alignment | None = None
    comparison: ContentComparison | None = None

    @property
    def holds(self) -> bool:
        """Whether the upload shows this record's picture."""
        return self.pixels_identical or (self.comparison is not None and self.comparison.matches)

    @property
    def kind(self) -> str:
        if self.pixels_identical or self.comparison is None:
            return "container"
        return self.comparison.kind


@dataclass
class Evidence:
    """Everything the checks found; filled stage by stage."""

    data: bytes
    mime_type: str
    sha256: str
    exact: Record | None = None
    signature_valid: bool | None = None
    c2pa: ManifestReport | None = None
    detection: Detection | None = None
    mark_record: Record | None = None  # the record a blind mark reading names: a candidate until bound
    manifest_record: Record | None = None  # only set for a valid manifest that chains to our trust anchor
    claimed_by_untrusted_manifest: str | None = None  # a record id an untrusted or broken manifest claims
    binding: Binding | None = None  # the record whose certified original the upload shows
    copied_mark: Record | None = None  # a record whose mark was read on content that is not its picture
    fingerprint_distance: int | None = None
    confirmation: MarkConfirmation | None = None
    chain: dict[str, Any] = field(default_factory=dict)
    ipfs: dict[str, Any] = field(default_factory=dict)
    ignore: Callable[[Record], bool] | None = None  # records a mark or fingerprint may not propose (certify's owner)
    blind_factors: tuple[float, ...] | None = None  # rescalings of the blind mark read (None: the watermarker's)

    def proposable(self, record: Record | None) -> bool:
        return record is not None and (self.ignore is None or not self.ignore(record))

    @property
    def record(self) -> Record | None:
        """The record the trusted evidence leads to, strongest link first."""
        if self.exact is not None:
            return self.exact
        if self.binding is not None and self.binding.holds:
            return self.binding.record
        return self.manifest_record

    def items(self) -> list[EvidenceItem]:
        found: list[EvidenceItem] = []
        if self.exact is not None:
            found.append(
                EvidenceItem(
                    kind="exact_hash",
                    strength="conclusive",
                    record_id=self.exact.id,
                    detail="The SHA-256 of the file is the certified file's hash.",
                )
            )
        if self.manifest_record is not None:
            found.append(
                EvidenceItem(
                    kind="c2pa_manifest",
                    strength="strong",
                    record_id=self.manifest_record.id,
                    detail="A C2PA manifest signed under this service's trust anchor names the record.",
                )
            )
        if self.exact is not None and self.mark_record is not None and self.mark_record.id == self.exact.id:
            assert self.detection is not None
            found.append(
                EvidenceItem(
                    kind="watermark",
                    strength="probabilistic",
                    record_id=self.exact.id,
                    detail="The keyed watermark names the same record.",
                    bit_errors=self.detection.bit_errors,
                    false_positive_probability=self.detection.false_positive_probability,
                )
            )
        bound = self.binding if self.binding is not None and self.binding.holds else None
        if bound is not None and bound.pixels_identical:
            found.append(
                EvidenceItem(
                    kind="pixels",
                    strength="conclusive",
                    record_id=bound.record.id,
                    detail="The decoded pixels are exactly those of the certified original the service holds.",
                )
            )
        elif bound is not None and bound.comparison is not None:
            comparison = bound.comparison
            found.append(
                EvidenceItem(
                    kind="content",
                    strength="strong",
                    record_id=bound.record.id,
                    detail=f"Aligned to the certified original the service holds, the upload shows its content: "
                    f"detail correlation {comparison.correlation:.2f}, {comparison.unchanged_share:.0%} of the "
                    "overlap unchanged.",
                )
            )
        if bound is not None and bound.via == "fingerprint" and self.confirmation is not None:
            found.append(
                EvidenceItem(
                    kind="watermark",
                    strength="probabilistic",
                    record_id=bound.record.id,
                    detail=f"After aligning the upload to the certified original, the keyed mark's "
                    f"{self.confirmation.component} component agrees in "
                    f"{self.confirmation.agreeing_bits} of {self.confirmation.bits_compared} bits "
                    f"({self.confirmation.blocks_used} "
                    f"{'cells' if self.confirmation.component == 'luminance' else 'blocks'} read).",
                    false_positive_probability=self.confirmation.p_value,
                )
            )
            found.append(
                EvidenceItem(
                    kind="fingerprint",
                    strength="weak",
                    record_id=bound.record.id,
                    detail="The image's fingerprint is close to the record's; on its own this only proposes a "
                    "candidate.",
                    distance=self.fingerprint_distance,
                )
            )
        elif bound is not None and bound.via == "mark" and self.detection is not None:
            found.append(
                EvidenceItem(
                    kind="watermark",
                    strength="probabilistic",
                    record_id=bound.record.id,
                    detail=f"The keyed watermark names the record ({self.detection.bit_errors} of 80 payload bits "
                    f"wrong, read after rescaling by {self.detection.scale:g}).",
                    bit_errors=self.detection.bit_errors,
                    false_positive_probability=self.detection.false_positive_probability,
                )
            )
        return found


def _container_reasons(ev: Evidence) -> list[str]:
    reasons = ["the decoded pixels are exactly the certified original's: only the file around them changed"]
    c2pa = ev.c2pa
    if c2pa is not None and c2pa.present and not (c2pa.valid and c2pa.trusted):
        failures = "; ".join(c2pa.failures) or "not signed by this service"
        reasons.append(f"the file's C2PA manifest no longer checks (as expected once the file changed): {failures}")
    elif c2pa is not None and not c2pa.present:
        reasons.append("the file carries no C2PA manifest (stripped)")
    return reasons


def decide(ev: Evidence) -> tuple[str, Record | None, list[str]]:
    """The verdict policy: (verdict, the record it names, reasons)."""
    reasons: list[str] = []
    c2pa = ev.c2pa
    bound = ev.binding if ev.binding is not None and ev.binding.holds else None
    if ev.claimed_by_untrusted_manifest is not None and ev.exact is None:
        if bound is not None and bound.pixels_identical and bound.record.id == ev.claimed_by_untrusted_manifest:
            return MODIFIED, bound.record, _container_reasons(ev)
        reasons.append(
            f"a manifest claims record {ev.claimed_by_untrusted_manifest} of this service but its signer is not "
            "trusted"
            + ("" if c2pa is None or c2pa.valid else " and it fails validation")
            + ", and the picture is not that record's certified original"
        )
        # A forged claim must never lend its target.
        return INVALID, None, reasons
    state = getattr(c2pa, "state", None) if c2pa is not None else None
    if c2pa is not None and c2pa.present and not c2pa.valid and state != "unverifiable" and ev.exact is None:
        if bound is not None and bound.pixels_identical:
            return MODIFIED, bound.record, _container_reasons(ev)
        reasons.append("the C2PA manifest fails validation: " + ("; ".join(c2pa.failures) or "no reason given"))
        return INVALID, None, reasons
    if ev.exact is not None:
        if c2pa is not None and c2pa.present and not c2pa.valid and state != "unverifiable":
            reasons.append("the C2PA manifest fails validation: " + ("; ".join(c2pa.failures) or "no reason given"))
            return INVALID, ev.exact, reasons
        if not ev.signature_valid:
            reasons.append("the record's ECDSA signature does not check against its key")
            return INVALID, ev.exact, reasons
        if ev.chain.get("error"):
            reasons.append(ev.chain["error"])
        if ev.chain.get("registered") and ev.chain.get("key_valid") is False:
            reasons.append("the signing key was not published, or was revoked, at the registration block")
            return INVALID, ev.exact, reasons
        if ev.chain.get("status") == "unavailable":  # never "pending" for what may well be registered
            return UNAVAILABLE, ev.exact, reasons
        if ev.chain.get("registered"):
            reasons.append("exact certified bytes, valid signature, registered on chain")
            return AUTHENTIC, ev.exact, reasons
        reasons.append("exact certified bytes and valid signature; not (yet) registered on chain")
        return PENDING, ev.exact, reasons
    if bound is not None:
        if bound.pixels_identical:
            return MODIFIED, bound.record, _container_reasons(ev)
        if bound.via == "fingerprint":
            reasons.append(
                "a fingerprint proposed the record and the keyed mark, read after aligning the upload to the "
                "certified original, confirms it"
            )
        elif bound.via == "mark":
            reasons.append("the keyed watermark names the record")
        else:
            reasons.append("a trusted manifest names the record")
        reasons.append("aligned to the certified original, the upload shows its content; the bytes differ")
        return MODIFIED, bound.record, reasons
    if ev.manifest_record is not None:
        reasons.append("a trusted manifest names the record, but the bytes are not the certified ones")
        return MODIFIED, ev.manifest_record, reasons
    if state == "unverifiable":
        reasons.append("the file's C2PA manifest cannot be checked here (it is remote, or refers to what is missing)")
    elif c2pa is not None and c2pa.present and not c2pa.trusted:
        reasons.append("the image has a valid C2PA manifest, but not one signed by this service")
    if ev.copied_mark is not None:
        reasons.append(
            f"a mark of record {ev.copied_mark.id} was found, but on content that is not that record's picture "
            "(a copied mark): it says nothing about where this image comes from"
        )
        return UNKNOWN, None, reasons
    reasons.append("no exact match, no trusted manifest, no watermark of this service on its own picture")
    return UNKNOWN, None, reasons


class Verifier:
    """Walks the stages backwards. Components are slots: ``watermarker=None`` skips the mark."""

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
        fingerprint_index: FingerprintIndex | None = None,
        max_candidates: int = 8,
        structure_limits: media.StructureLimits | None = None,
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
        self._synced_at = 0.0
        self._sync_lock = threading.Lock()
        # Difference images of recent verifications, by verification id: bounded, in memory, never pinned
        # (a public endpoint must not let anyone fill the blockstore).
        self._diffs: OrderedDict[str, Future[bytes]] = OrderedDict()
        self._diffs_lock = threading.Lock()
        self._diff_renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="difference-png")
        # Decoded certified originals by CID (immutable content): a copy that goes viral is verified again and
        # again against the same original, and decoding a 1024x1024 PNG costs ~30 ms. Bounded by pixels.
        self._originals: OrderedDict[str, np.ndarray] = OrderedDict()
        self._originals_lock = threading.Lock()
        # The sizes of marked records, for the blind read's rescalings (see _blind_factors).
        self._marked_sizes: frozenset[tuple[int, int]] = frozenset()
        self._sizes_read_at = -math.inf

    # Each check fills its part of the evidence and returns its report.
    def _check_exact(self, ev: Evidence) -> dict[str, Any]:
        ev.exact = self.repository.by_sha256(ev.sha256)
        if ev.exact is None:
            return {"matched": False, "sha256": ev.sha256}
        key = self.repository.public_key(ev.exact.key_id)
        ev.signature_valid = key is not None and verify_signature(key, ev.data, ev.exact.signature)
        return {
            "matched": True,
            "sha256": ev.sha256,
            "record_id": ev.exact.id,
            "key_id": ev.exact.key_id,
            "signature": ev.exact.signature,
            "signature_valid": ev.signature_valid,
        }

    def _check_c2pa(self, ev: Evidence) -> dict[str, Any]:
        ev.c2pa = self.manifest_reader.read(ev.data, ev.mime_type)
        report = ev.c2pa.as_dict()
        claimed = ev.c2pa.record_id
        if not claimed:
            return report
        if ev.c2pa.valid and ev.c2pa.trusted:
            ev.manifest_record = self.repository.get(claimed)
            if ev.manifest_record is None:
                report["note"] = f"the trusted manifest names record {claimed}, which this service does not hold"
            return report
        # An untrusted or broken manifest is anyone's words: it resolves to nothing on its own. Claiming one of
        # our records is checked against that record's certified pixels (see _check_binding).
        report["record_id"] = None
        report["claimed_record_id"] = claimed
        if self.repository.get(claimed) is not None:
            ev.claimed_by_untrusted_manifest = claimed
        return report

    def _blind_factors(self, width: int, height: int, factors: tuple[float, ...]) -> tuple[float, ...]:
        """The rescalings worth a blind read: those that give back the size of some marked record.

        A rescaled read only helps a copy resized from a whole original, and only when scaling it back
        restores that original's size (to a pixel or two of rounding); every other rescaling reads noise,
        costs up to four times the image's own read, and adds a chance of a false decode. The set of marked
        sizes is read at most once a second, and only when a rescaling is not in it; sizes this instance
        marked itself count at once.
        """

        assert self.watermarker is not None
        fresh = self.watermarker.marked_sizes  # sizes this instance marked since it started

        def sizes_near(factor: float) -> bool:
            w, h = round(width * factor), round(height * factor)
            near = [(w + dx, h + dy) for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)]
            return any(size in self._marked_sizes or size in fresh for size in near)

        kept = []
        for factor in factors:
            if factor != 1.0 and not sizes_near(factor) and time.monotonic() - self._sizes_read_at >= 1.0:
                self._marked_sizes = frozenset(self.repository.marked_sizes())
                self._sizes_read_at = time.monotonic()
            if factor == 1.0 or sizes_near(factor):
                kept.append(factor)
        return tuple(kept)

    def _check_watermark(self, ev: Evidence, rgb: np.ndarray) -> dict[str, Any]:
        if self.watermarker is None:
            return {"detected": False, "method": None, "record_id": None, "reason": "watermark reading disabled"}
        factors = self._blind_factors(rgb.shape[1], rgb.shape[0], ev.blind_factors or self.watermarker.factors)
        ev.detection = detection = self.watermarker.detect(rgb, factors=factors)
        report: dict[str, Any] = {
            "detected": detection.detected,
            "method": self.watermarker.method,
            "watermark_id": detection.watermark_id,
            "corrected_errors": detection.corrected_errors,
            "bit_errors": detection.bit_errors,
            "rescale": detection.scale,
            "tries": detection.tries,
            "false_positive_probability": detection.false_positive_probability,
            "record_id": None,
        }
        if detection.reason:
            report["reason"] = detection.reason
        if detection.watermark_id is not None:
            found = self.repository.by_watermark(detection.watermark_id)
            # A reading counts for a record only in the layout its mark was embedded with.
            same_layout = (
                found is not None and (found.mark_layout or watermark.LAYOUT_VERSION) == detection.layout_version
            )
            if same_layout and ev.proposable(found):
                ev.mark_record = found
            # Named only once the content is bound to the record's original (see _check_binding).
            report["claimed_record_id"] = ev.mark_record.id if ev.mark_record else None
            if ev.mark_record is None:
                report["reason"] = "a payload was read but it names no record of this service"
        return report

    def _luma_reference(self, record: Record) -> LumaReference | None:
        """The record's stored luminance mark reference (None: a mark made before it, or unreadable)."""
        data = self.repository.mark_reference(record.id)
        if data is None:
            return None
        try:
            return LumaReference.from_bytes(data)
        except ValueError:
            logger.warning("record %s: its luminance mark reference cannot be read", record.id)
            return None

    def _original_rgb(self, record: Record) -> np.ndarray | None:
        """The record's certified pixels (read-only: shared by every verification that needs them)."""
        with self._originals_lock:
            if record.cid in self._originals:
                self._originals.move_to_end(record.cid)
                return self._originals[record.cid]
        try:
            _, rgb = media.decode_rgb(
                self.store.cat(record.cid), max_bytes=1 << 62, max_pixels=1 << 62, limits=self.structure_limits
            )
        except ProvenanceError:
            return None
        rgb.setflags(write=False)
        with self._originals_lock:
            self._originals[record.cid] = rgb
            while sum(image.size for image in self._originals.values()) > ORIGINAL_CACHE_VALUES:
                self._originals.popitem(last=False)
        return rgb

    def _bind(self, record: Record, via: Any, rgb: np.ndarray, *, alignment: Alignment | None = None) -> Binding | None:
        """Tie the upload to ``record``'s certified original: same pixels, or the same content once aligned.

        Without an ``alignment`` the geometry a blind mark reading implies is tried first (the whole
        original, resized), then a feature alignment (a composite, a crop that kept the block grid).
        """
        original = self._original_rgb(record)
        if original is None:
            return None
        if pixels_identical(rgb, original):
            return Binding(record, via, original, pixels_identical=True)
        tries = [alignment] if alignment is not None else [direct_alignment(rgb, original), None]
        best: Binding | None = None
        for attempt in tries:
            fitted = attempt if attempt is not None else align(rgb, original)
            if fitted is None:
                continue
            binding = Binding(record, via, original, alignment=fitted, comparison=compare(fitted, rgb, original))
            if binding.holds:
                return binding
            best = best or binding
        return best or Binding(record, via, original)

    def _check_binding(self, ev: Evidence, rgb: np.ndarray) -> dict[str, Any]:
        """Check what the manifest or the mark proposes against the certified original the service holds."""
        if ev.exact is not None:
            return {"checked": False, "reason": "exact certified bytes"}
        candidate: Record | None = None
        via: Any = None
        if ev.manifest_record is not None:
            candidate, via = ev.manifest_record, "manifest"
        elif ev.claimed_by_untrusted_manifest is not None:
            candidate, via = self.repository.get(ev.claimed_by_untrusted_manifest), "manifest_claim"
        elif ev.mark_record is not None:
            candidate, via = ev.mark_record, "mark"
        if candidate is None:
            return {"checked": False, "reason": "no manifest or mark proposes a record"}
        binding = self._bind(candidate, via, rgb)
        report: dict[str, Any] = {"checked": True, "candidate": candidate.id, "via": via}
        if binding is None:
            report["reason"] = "the certified original cannot be read from the content store"
            return report
        if via == "manifest_claim" and not binding.pixels_identical:
            binding = None  # a broken or foreign manifest binds only the very pixels it claims
        ev.binding = binding
        report.update(_binding_report(binding))
        if via == "mark" and (binding is None or not binding.holds):
            ev.copied_mark = candidate
            report["copied_mark"] = True
        return report

    def _sync_index(self) -> None:
        """Catch up with fingerprints other instances stored, at most once a second."""
        assert self.fingerprint_index is not None
        now = time.monotonic()
        if now - self._synced_at < 1.0 or not self._sync_lock.acquire(blocking=False):
            return
        try:
            self.fingerprint_index.sync(self.repository)
            self._synced_at = now
        finally:
            self._sync_lock.release()

    def _candidate_pictures(self, found: list[Any], ev: Evidence) -> list[tuple[Any, Record, tuple[str, int, int]]]:
        """The candidates of the ``max_candidates`` best distinct pictures, every record holding one of them.

        A picture is what records holding the same image share (certified twice, near-identical renders): the
        ISCC code and the size. Records of one picture share one alignment, so trying all of them costs one mark
        reading each; a cap on records instead would let a picture certified many times crowd its own right
        record out of the list. Returns (candidate, record, picture), best first; one database query.
        """
        held = self.repository.pictures([candidate.record_id for candidate in found])
        pictures: set[tuple[str, int, int]] = set()
        chosen = []
        for candidate in found:
            record, iscc = held.get(candidate.record_id, (None, None))
            if record is None or not ev.proposable(record):
                continue
            picture = (iscc or record.id, record.width, record.height)
            if picture not in pictures:
                if len(pictures) >= self.max_candidates:
                    continue
                pictures.add(picture)
            chosen.append((candidate, record, picture))
        return chosen

    def _check_fingerprint(self, ev: Evidence, rgb: np.ndarray) -> dict[str, Any]:
        """Find the original when nothing else bound the upload (crops, flips, rotations, heavy edits).

        The fingerprint only proposes candidates. A candidate whose certified pixels the upload carries
        exactly is bound at once; otherwise the upload is aligned to the candidate's original, the keyed
        mark is read in the original's block grid, and the content is compared. A candidate that fails
        is reported as a weak match and never named as the record.
        """
        if self.fingerprinter is None or self.fingerprint_index is None:
            return {"searched": False, "reason": "fingerprint lookup disabled"}
        if ev.record is not None or ev.claimed_by_untrusted_manifest is not None:
            return {"searched": False, "reason": "the record was already found by stronger evidence"}
        self._sync_index()
        query = self.fingerprinter.query(rgb)
        candidates = self._candidate_pictures(self.fingerprint_index.search(query, k=MAX_CANDIDATE_RECORDS), ev)
        report: dict[str, Any] = {"searched": True, "iscc": query.iscc, "candidates": [], "weak_matches": []}
        # Every candidate tried is a chance for a false confirmation: split the per-image budget among them.
        threshold = FALSE_MATCH_BUDGET / max(1, len(candidates))
        report["confirmation_threshold"] = threshold
        upload_features = features(rgb) if candidates else None  # described once, compared with each candidate
        # Several records can hold the same picture (certified twice, or a batch of near-identical renders): their
        # originals share the whole-image code and the geometry, so one alignment serves them all; only the
        # mark, which differs per record, is read again.
        aligned_by_code: dict[tuple[str, int, int], Alignment | None] = {}
        compared_by_code: dict[tuple[str, int, int], ContentComparison] = {}
        originals_by_code: dict[tuple[str, int, int], np.ndarray | None] = {}
        for candidate, record, group in candidates:
            if ev.copied_mark is not None and record.id == ev.copied_mark.id:
                continue
            row: dict[str, Any] = {"distance": candidate.distance, "aligned": False, "confirmed": False}
            same_size = rgb.shape[:2] == (record.height, record.width)
            # Records of one picture differ only in their marks: one decoded original serves the alignment, the
            # comparison and the light fit of them all. Only an exact pixel check needs the record's own pixels.
            if same_size or group not in originals_by_code:
                own = self._original_rgb(record)
                originals_by_code.setdefault(group, own)
                if same_size and own is not None and pixels_identical(rgb, own):
                    ev.binding = Binding(record, "fingerprint", own, pixels_identical=True)
                    ev.fingerprint_distance = candidate.distance
                    row.update(record_id=record.id, pixels_identical=True)
                    report["candidates"].append(row)
                    break
            original = originals_by_code[group]
            if original is None:
                alignment = None
            elif group in aligned_by_code:
                alignment = aligned_by_code[group]
            else:
                alignment = aligned_by_code[group] = align(rgb, original, upload_features=upload_features)
            if alignment is not None and original is not None:
                row["aligned"] = True
                if group not in compared_by_code:  # the comparison depends on the picture only, like the alignment
                    compared_by_code[group] = compare(alignment, rgb, original)
                comparison = compared_by_code[group]
                if record.watermark_id is not None and self.watermarker is not None:
                    # Read the mark only where the upload shows the original (a composite's pasted region): the
                    # rest votes noise. The area is chosen from luminance detail, never from the mark.
                    shown = comparison.shown_mask(alignment.mask)
                    confirmation = confirm_mark(
                        alignment.aligned,
                        shown,
                        original,
                        watermark.encode_payload(record.watermark_id, self.watermarker.key),  # mask: layout-free
                        key=self.watermarker.key.for_layout(record.mark_layout),
                        threshold=threshold,
                        photometric=alignment.photometric if shown is alignment.mask else None,
                        luma_reference=self._luma_reference(record),
                    )
                    row.update(
                        confirmed=confirmation.confirmed,
                        component=confirmation.component,
                        p_value=confirmation.p_value,
                        agreeing_bits=confirmation.agreeing_bits,
                        bits_compared=confirmation.bits_compared,
                    )
                    if confirmation.confirmed:
                        binding = Binding(record, "fingerprint", original, alignment=alignment, comparison=comparison)
                        row.update(_binding_report(binding))
                        if binding.holds:
                            ev.binding, ev.confirmation = binding, confirmation
                            ev.fingerprint_distance = candidate.distance
                            row["record_id"] = record.id
                            report["candidates"].append(row)
                            break
                        ev.copied_mark = ev.copied_mark or record
            # Unconfirmed: similar, maybe a relative (another shot of the scene), maybe the original with its
            # mark destroyed. Reported, never named as the record.
            report["weak_matches"].append({"record_id": record.id, **row})
        bound = ev.binding if ev.binding is not None and ev.binding.holds else None
        report["record_id"] = bound.record.id if bound is not None and bound.via == "fingerprint" else None
        return report

    def difference_image(self, verification_id: str) -> bytes | None:
        """The PNG of a recent verification's differences, if this instance still holds it (waits for its rendering)."""
        with self._diffs_lock:
            pending = self._diffs.get(verification_id)
        if pending is None:
            return None
        try:
            return pending.result(timeout=60)
        except Exception:  # cancelled (evicted), or the rendering failed: as if it had expired
            logger.warning("difference image %s could not be rendered", verification_id, exc_info=True)
            return None

    def _keep_difference(self, render: Callable[[], bytes]) -> str:
        verification_id = secrets.token_hex(16)
        with self._diffs_lock:
            waiting = sum(not future.done() for future in self._diffs.values())
        if waiting >= MAX_PENDING_DIFFS:
            pending: Future[bytes] = Future()
            pending.set_result(render())
        else:
            pending = self._diff_renderer.submit(render)
        with self._diffs_lock:
            self._diffs[verification_id] = pending
            while len(self._diffs) > DIFF_CACHE_SIZE:
                self._diffs.popitem(last=False)[1].cancel()
        return verification_id

    def close(self) -> None:
        """Stop the difference renderer (pending renderings are dropped)."""
        self._diff_renderer.shutdown(wait=False, cancel_futures=True)

    def _check_chain(self, ev: Evidence) -> dict[str, Any]:
        # Read live from the contract; the database only says where to look (which batch root).
        record = ev.record
        queried = record.sha256 if ev.exact is None and record is not None else ev.sha256
        base = {
            "chain_id": self.registry.chain_id,
            "registry_address": self.registry.address,
            "queried_sha256": queried,
        }
        try:
            if record is not None and record.batch_root:
                ev.chain = self._batch_entry(record, base)
            else:
                entry = self.registry.lookup(queried)
                ev.chain = {
                    **base,
                    "mode": "single",
                    "registered": entry.registered,
                    "registrant": entry.registrant,
                    "block_number": entry.block_number,
                    "timestamp": entry.timestamp,
                    "cid": entry.cid,
                }
            if record is not None and ev.chain.get("registered") and ev.chain.get("block_number") is not None:
                # The key that signed the record must have been published by the registry's owner, and not
                # revoked, when the record was registered.
                ev.chain["key_id"] = record.key_id
                ev.chain["key_valid"] = self.registry.key_valid_at(record.key_id, int(ev.chain["block_number"]))
        except Exception as exc:  # an unreachable RPC is a result, not a crash
            # Unknown, not False: the record may well be registered; the chain just cannot say so now.
            error = f"the chain cannot be read: {exc}"
            ev.chain = {**base, "status": "unavailable", "registered": None, "error": error}
            return ev.chain
        ev.chain["status"] = "ok"
        if record is not None:
            ev.chain["tx_hash"] = record.tx_hash
        return ev.chain

    def _batch_entry(self, record: Record, base: dict[str, Any]) -> dict[str, Any]:
        assert record.batch_root is not None
        entry = self.registry.batch(record.batch_root)
        included = self.registry.is_registered(record.sha256, record.batch_root, record.merkle_proof or [])
        return {
            **base,
            "mode": "batch",
            "registered": entry.anchored and included,
            "batch_root": record.batch_root,
            "proof": record.merkle_proof,
            "proof_valid": included,
            "leaves_cid": entry.leaves_cid,
            "registrant": entry.registrant,
            "block_number": entry.block_number,
            "timestamp": entry.timestamp,
        }

    def _check_ipfs(self, ev: Evidence) -> dict[str, Any]:
        cid = ev.record.cid if ev.record is not None else compute_cid(ev.data)
        try:
            pinned = self.store.has(cid)
            error = None
        except ProvenanceError as exc:
            pinned, error = False, exc.detail
        ev.ipfs = {"cid": cid, "pinned": pinned, "store": self.store.description}
        if ev.exact is None and ev.record is not None:
            ev.ipfs["note"] = "CID of the original certified file"
        if error:
            ev.ipfs["error"] = error
        return ev.ipfs

    def _describe(
        self, ev: Evidence, rgb: np.ndarray, record: Record
    ) -> tuple[dict[str, Any], Callable[[], bytes] | None]:
        """For a modified copy: the kind of modification, what changed and where (and how to draw the differences)."""
        binding = ev.binding if ev.binding is not None and ev.binding.record.id == record.id else None
        if binding is None:
            binding = self._bind(record, "manifest", rgb)  # None when the original cannot be read
        out: dict[str, Any] = {"modification": None, "changes": [], "edited_regions": [], "contained_region": None}
        if binding is None:
            return out, None
        if binding.pixels_identical:
            out["modification"] = "container"
            out["changes"] = ["same pixels as the certified original; the file around them changed"]
            return out, None
        alignment, comparison = binding.alignment, binding.comparison
        if alignment is None or comparison is None:
            out["changes"] = ["could not be aligned with the certified original"]
            return out, None
        # Media types are image/<format>, with the format names describe_changes expects.
        upload_fmt, original_fmt = ev.mime_type.removeprefix("image/"), record.media_type.removeprefix("image/")
        size = (rgb.shape[1], rgb.shape[0])
        changes = describe_changes(alignment, upload_fmt, original_fmt, size, (record.width, record.height))
        # The cell comparison is the edit detector: drop the pixel-level estimate it replaces.
        changes = [c for c in changes if not c.startswith("edited:")]
        out["modification"] = comparison.kind
        if comparison.contained_region is not None:
            box = comparison.contained_region
            # The geometry and light fitted over the whole frame describe the host picture, not the pasted region.
            changes = [c for c in changes if not c.startswith(("cropped", "covers", "brightness", "contrast", "satur"))]
            changes.insert(
                0,
                f"contains a region of record {record.id} at ({box.x0},{box.y0})-({box.x1},{box.y1}), "
                f"{box.share:.0%} of the image",
            )
            out["contained_region"] = Region(box=box.box, share=box.share)
        for region in comparison.edited_regions:
            changes.append(
                f"edited region at ({region.x0},{region.y0})-({region.x1},{region.y1}), {region.share:.1%} of the image"
            )
        out["edited_regions"] = [Region(box=r.box, share=r.share) for r in comparison.edited_regions]
        out["changes"] = changes
        return out, functools.partial(difference_png, alignment, binding.original_rgb)

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
        checks: dict[str, dict[str, Any]] = {}
        checks["exact"] = timed("exact", self._check_exact, ev)
        checks["c2pa"] = timed("c2pa", self._check_c2pa, ev)
        checks["watermark"] = timed("watermark", self._check_watermark, ev, rgb)
        checks["binding"] = timed("binding", self._check_binding, ev, rgb)
        named = ev.record
        if ev.mark_record is not None and named is not None and ev.mark_record.id == named.id:
            checks["watermark"]["record_id"] = named.id  # the mark's record, bound to the picture (or exact bytes)
        checks["fingerprint"] = timed("fingerprint", self._check_fingerprint, ev, rgb)
        checks["chain"] = timed("chain", self._check_chain, ev)
        checks["ipfs"] = timed("ipfs", self._check_ipfs, ev)
        verdict, record, reasons = decide(ev)
        if record is not None and verdict != INVALID and is_development_chain(self.registry.chain_id):
            reasons.append(development_chain_reason(self.registry.chain_id))
        evidence = ev.items() if verdict != INVALID else [i for i in ev.items() if i.kind == "exact_hash"]
        detail: dict[str, Any] = {"modification": None, "changes": [], "edited_regions": [], "contained_region": None}
        verification_id = None
        summary = SUMMARIES[verdict]
        if verdict == MODIFIED and record is not None:
            detail, render = timed("difference", self._describe, ev, rgb, record)
            if render is not None:
                verification_id = self._keep_difference(render)
            if detail["modification"]:
                summary = MODIFIED_SUMMARIES[detail["modification"]]
        copied = None
        if ev.copied_mark is not None and (record is None or record.id != ev.copied_mark.id):
            copied = CopiedMark(
                claimed_by_mark=ev.copied_mark.id,
                detail=f"The keyed mark of record {ev.copied_mark.id} was read, but the picture does not show that "
                "record's certified original: the mark was copied onto other content. This is not provenance.",
            )
        return VerificationResult(
            verdict=verdict,  # type: ignore[arg-type]
            record_id=record.id if record else None,
            summary=summary,
            reasons=reasons,
            evidence=evidence,
            changes=detail["changes"],
            modification=detail["modification"],
            edited_regions=detail["edited_regions"],
            contained_region=detail["contained_region"],
            copied_mark=copied,
            origin=self._origin(record) if record is not None and verdict != INVALID else None,
            verification_id=verification_id,
            diff_url=f"/v1/verify/{verification_id}/diff.png" if verification_id else None,
            checks=checks,
            timings_ms=timings,
        )


def _binding_report(binding: Binding | None) -> dict[str, Any]:
    if binding is None:
        return {"bound": False}
    report: dict[str, Any] = {"bound": binding.holds, "pixels_identical": binding.pixels_identical}
    if binding.alignment is None and not binding.pixels_identical:
        report["reason"] = "could not be aligned with the certified original"
    if binding.comparison is not None:
        report.update(binding.comparison.as_dict())
    return report
