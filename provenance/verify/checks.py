"""What each verification check reports: one pydantic model per check, and ``Checks`` holding them.

These are the ``checks`` of ``VerificationResult``: the API returns them, the CLI prints them, the web page
renders them, and ``GET /openapi.json`` shows every field.

A check reports only what it found: a field appears in the JSON when the check set it (even to null) and is
left out when it did not (``Report``). So a disabled check says ``{"searched": false, "reason": ...}`` and
nothing else, exactly as the report always read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, SerializerFunctionWrapHandler, model_serializer

from provenance.marks.binding import ContentComparison


class Report(BaseModel):
    """A report that serialises the fields it was given, and only those (``exclude_unset`` on every dump).

    Checks set what applies to the case at hand: a field never set is not part of the answer (rather than a
    null that would say "checked, nothing there"). Assignments are validated, so a report can be filled in as
    the check goes.
    """

    model_config = ConfigDict(validate_assignment=True)

    # No return annotation on purpose: pydantic would take it as the serialised schema and lose the fields.
    @model_serializer(mode="wrap")
    def _given_fields(self, handler: SerializerFunctionWrapHandler):
        data = handler(self)
        return {key: value for key, value in data.items() if key in self.model_fields_set}


# ---------- exact ----------


class ExactCheck(Report):
    """The SHA-256 of the file, and the record certified with exactly these bytes, with its signature check."""

    matched: bool
    sha256: str
    record_id: str | None = None
    key_id: str | None = None
    signature: str | None = Field(default=None, description="The record's ECDSA signature (base64).")
    signature_valid: bool | None = None


# ---------- C2PA ----------


class ManifestAction(Report):
    """One action of a ``c2pa.actions`` assertion (the manifest's words, as written)."""

    action: JsonValue = None
    digitalSourceType: JsonValue = None


class SoftBinding(Report):
    """One block of a soft-binding assertion (e.g. the ISCC fingerprint)."""

    alg: JsonValue = None
    value: JsonValue = None


class ManifestSummary(Report):
    """What the active manifest says (empty when there is no manifest)."""

    label: str | None = None
    title: str | None = None
    claim_generator: list[str] = Field(default_factory=list)
    actions: list[ManifestAction] = Field(default_factory=list)
    signer: str | None = None
    issuer: str | None = None
    signed_at: str | None = None
    soft_bindings: list[SoftBinding] = Field(default_factory=list)
    generation: JsonValue = Field(default=None, description="This service's generation record, when it made one.")


class TimeStamp(Report):
    """Whether the signature carries an RFC 3161 time-stamp, and what c2pa made of it."""

    present: bool = False
    validated: bool = False
    trusted: bool = False
    time: str | None = None
    codes: list[str] = Field(default_factory=list)


class ValidationCodes(Report):
    """c2pa status codes by kind."""

    success: list[str] = Field(default_factory=list)
    informational: list[str] = Field(default_factory=list)
    failure: list[str] = Field(default_factory=list)


class Ingredient(Report):
    """One ingredient of a manifest, judged by its own manifest (never by the active one's), recursively."""

    title: str | None = None
    relationship: str | None = None
    format: str | None = None
    has_manifest: bool | None = None
    manifest: str | None = None
    claim_generator: list[str] | None = None
    signer: str | None = None
    issuer: str | None = None
    actions: list[ManifestAction] | None = None
    state: str | None = None
    valid: bool | None = None
    trusted: bool | None = None
    validation_state: str | None = None
    failures: list[str] | None = None
    validation: ValidationCodes | None = None
    time_stamp: TimeStamp | None = None
    ingredients: list[Ingredient] | None = None
    truncated: bool | None = Field(default=None, description="True: the chain is deeper than is walked.")


class C2paCheck(Report):
    """The C2PA manifest: present, valid, trusted (see ``ManifestReport``), and the record it names."""

    present: bool
    state: str | None = None
    valid: bool = False
    trusted: bool = False
    validation_state: str | None = None
    failures: list[str] = Field(default_factory=list)
    record_id: str | None = Field(default=None, description="The record a trusted manifest names.")
    claimed_record_id: str | None = Field(
        default=None, description="The record an untrusted or broken manifest claims (never taken at its word)."
    )
    note: str | None = None
    summary: ManifestSummary = Field(default_factory=ManifestSummary)
    time_stamp: TimeStamp = Field(default_factory=TimeStamp)
    ingredients: list[Ingredient] = Field(default_factory=list)


# ---------- watermark ----------


class WatermarkCheck(Report):
    """The blind reading of the keyed mark; ``claimed_record_id`` is a candidate until the content is bound."""

    detected: bool
    method: str | None = None
    watermark_id: int | None = None
    corrected_errors: int | None = None
    bit_errors: int | None = None
    rescale: float | None = None
    tries: int | None = None
    false_positive_probability: float | None = None
    record_id: str | None = Field(default=None, description="Set once the mark's record is bound to the picture.")
    claimed_record_id: str | None = None
    reason: str | None = None


# ---------- binding ----------


class RegionBox(Report):
    """A rectangle of the upload (x0, y0, x1, y1), end exclusive, and its share of the upload's area."""

    box: list[int]
    share: float


class BindingFields(Report):
    """How an upload compares with a record's certified original (shared by the binding and fingerprint rows)."""

    bound: bool | None = None
    pixels_identical: bool | None = None
    reason: str | None = None
    content_matches: bool | None = None
    correlation: float | None = None
    block_agreement: float | None = None
    unchanged_share: float | None = None
    cells_compared: int | None = None
    cell_threshold: float | None = None
    edited_regions: list[RegionBox] | None = None
    contained_region: RegionBox | None = None

    def show_binding(
        self, *, holds: bool, pixels_identical: bool, aligned: bool, comparison: ContentComparison | None
    ) -> None:
        """Record a binding's outcome (``holds``: the upload shows the original's picture)."""
        self.bound, self.pixels_identical = holds, pixels_identical
        if not aligned and not pixels_identical:
            self.reason = "could not be aligned with the certified original"
        if comparison is not None:
            for key, value in comparison.as_dict().items():
                setattr(self, key, value)

    def show_unbound(self) -> None:
        """No binding could be made (the original could not be read, or a claim binds only identical pixels)."""
        self.bound = False


class BindingCheck(BindingFields):
    """What a manifest or a mark proposes, checked against the certified original the service holds."""

    checked: bool
    candidate: str | None = None
    via: Literal["manifest", "manifest_claim", "mark", "fingerprint"] | None = None
    copied_mark: bool | None = Field(default=None, description="True: the mark was read on other content.")


# ---------- fingerprint ----------


class FingerprintCandidate(BindingFields):
    """One record the fingerprint proposed, and what the alignment and the mark confirmation made of it."""

    record_id: str | None = None
    distance: int
    aligned: bool = False
    confirmed: bool = False
    component: str | None = Field(default=None, description="The mark component that decided: chroma or luminance.")
    p_value: float | None = None
    agreeing_bits: int | None = None
    bits_compared: int | None = None


class WeakMatch(FingerprintCandidate):
    """A similar record that was not confirmed (``record_id`` always set): reported, never named as the record."""


class FingerprintCheck(Report):
    """The fingerprint search: candidates confirmed by the mark, and weak matches that were not."""

    searched: bool
    reason: str | None = None
    iscc: str | None = None
    candidates: list[FingerprintCandidate] = Field(default_factory=list)
    weak_matches: list[WeakMatch] = Field(default_factory=list)
    confirmation_threshold: float | None = Field(
        default=None, description="The p-value a mark confirmation had to reach (the budget split among candidates)."
    )
    record_id: str | None = None


# ---------- chain and IPFS ----------


class ChainCheck(Report):
    """The registration, read live from the registry contract (the registration check of ``verify.registration``).

    Filled in field by field by ``Verifier._check_chain``: a field it does not declare is refused rather than
    dropped from the answer.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    chain_id: int | None = None
    registry_address: str | None = None
    queried_sha256: str | None = None
    mode: Literal["single", "batch"] | None = None
    registered: bool | None = Field(default=None, description="None: the chain could not be read.")
    registrant: str | None = None
    block_number: int | None = None
    timestamp: int | None = None
    cid: str | None = None
    cid_matches: bool | None = Field(default=None, description="The CID on chain is the record's.")
    batch_root: str | None = None
    proof: list[str] | None = None
    proof_valid: bool | None = None
    leaves_cid: str | None = None
    registrant_was_writer: bool | None = Field(
        default=None, description="The registrant was a writer of the registry at the registration block."
    )
    key_id: str | None = None
    key_valid: bool | None = Field(
        default=None, description="The signing key was published and not revoked at the registration block."
    )
    status: Literal["ok", "unavailable"] | None = None
    error: str | None = None
    tx_hash: str | None = None


class IpfsCheck(Report):
    """Whether the content store holds the file (or the certified original a modified copy comes from)."""

    cid: str
    pinned: bool
    store: str
    note: str | None = None
    error: str | None = None


class Checks(Report):
    """Every check on its own: c2pa, exact, watermark, binding, fingerprint, chain, ipfs."""

    exact: ExactCheck | None = None
    c2pa: C2paCheck | None = None
    watermark: WatermarkCheck | None = None
    binding: BindingCheck | None = None
    fingerprint: FingerprintCheck | None = None
    chain: ChainCheck | None = None
    ipfs: IpfsCheck | None = None

    def __getitem__(self, name: str) -> Any:
        """One check as the API's JSON shows it (``result.checks["chain"]["mode"]``): scripts written against the
        JSON read a result object the same way. ``KeyError`` for a check that did not run."""
        value = self.model_dump(mode="json").get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """``self[name]``, or ``default`` for a check that did not run."""
        try:
            return self[name]
        except KeyError:
            return default
