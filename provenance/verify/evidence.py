"""The evidence a verification gathers, stage by stage, and the binding of an upload to a certified original.

``Evidence`` is filled by the verifier's checks and read by the verdict policy; ``Evidence.items`` turns it into
the report's evidence list (strongest first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from provenance.db.models import Record
from provenance.manifests.manifest import ManifestReport
from provenance.marks.align import Alignment
from provenance.marks.binding import ContentComparison
from provenance.marks.confirm import MarkConfirmation
from provenance.marks.watermark import Detection
from provenance.verify.checks import BindingFields, ChainCheck, IpfsCheck
from provenance.verify.report import EvidenceItem

Via = Literal["manifest", "manifest_claim", "mark", "fingerprint"]


@dataclass
class Binding:
    """The upload tied to a record's certified original, and how.

    ``pixels_identical``: the decoded pictures are the same (only the file changed). Otherwise
    ``comparison`` says whether, once aligned, the upload shows the original's content.
    """

    record: Record
    via: Via
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
        """``container`` (same pixels, or nothing compared), else the comparison's kind of modification."""
        if self.pixels_identical or self.comparison is None:
            return "container"
        return self.comparison.kind

    def report_into(self, target: BindingFields) -> None:
        """Write this binding's outcome into a check's report."""
        target.show_binding(
            holds=self.holds,
            pixels_identical=self.pixels_identical,
            aligned=self.alignment is not None,
            comparison=self.comparison,
        )


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
    chain_check: ChainCheck | None = None  # the registration as ``_check_chain`` found it: what the policy reads
    ipfs: IpfsCheck | None = None
    ignore: Callable[[Record], bool] | None = None  # records a mark or fingerprint may not propose (certify's owner)
    blind_factors: tuple[float, ...] | None = None  # rescalings of the blind mark read (None: the watermarker's)

    def proposable(self, record: Record | None) -> bool:
        """Whether a mark or a fingerprint may propose ``record`` (not one of the ignored records)."""
        return record is not None and (self.ignore is None or not self.ignore(record))

    @property
    def record(self) -> Record | None:
        """The record the trusted evidence leads to, strongest link first."""
        if self.exact is not None:
            return self.exact
        if self.binding is not None and self.binding.holds:
            return self.binding.record
        return self.manifest_record

    @property
    def bound(self) -> Binding | None:
        """The binding, when it holds (the upload shows the record's picture)."""
        return self.binding if self.binding is not None and self.binding.holds else None

    def items(self) -> list[EvidenceItem]:
        """The evidence that links the upload to a record, strongest first."""
        return self._direct_items() + self._bound_items()

    def _direct_items(self) -> list[EvidenceItem]:
        """Exact bytes, a trusted manifest, and the mark when it names the exact record."""
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
        return found

    def _bound_items(self) -> list[EvidenceItem]:
        """What bound the upload to a record's certified original: pixels or content, and the mark that proposed it."""
        found: list[EvidenceItem] = []
        bound = self.bound
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
