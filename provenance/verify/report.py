"""The verification report: the verdict, the evidence behind it, what was modified, and every check.

``VerificationResult`` is the one report: the API returns it, the CLI prints it, the web page renders it.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from provenance.lineage.report import LineageReport
from provenance.verify.checks import Checks

AUTHENTIC: Final = "authentic"
PENDING: Final = "pending"
MODIFIED: Final = "modified"
UNKNOWN: Final = "unknown"
INVALID: Final = "invalid"
UNAVAILABLE: Final = "unavailable"  # exact certified bytes, but the chain cannot be read to say authentic or pending
Verdict = Literal["authentic", "pending", "modified", "unknown", "invalid", "unavailable"]

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
    checks: Checks = Field(description="c2pa, exact, watermark, binding, fingerprint, chain, ipfs: each on its own.")
    lineage: LineageReport | None = Field(
        default=None,
        description="For a generated image: its base model, LoRAs and their datasets, each link checked. "
        "A broken link is reported here and never changes the verdict.",
    )
    timings_ms: dict[str, float] = Field(default_factory=dict, exclude=True)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (what the API returns)."""
        return self.model_dump(mode="json")


class ModificationDetail(BaseModel):
    """For a modified copy: the kind of modification, what changed and where."""

    modification: Modification | None = None
    changes: list[str] = Field(default_factory=list)
    edited_regions: list[Region] = Field(default_factory=list)
    contained_region: Region | None = None
