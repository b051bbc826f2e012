"""Stage 3, C2PA: sign a manifest into the image, and read one back.

Signing and reading mirror each other: ``ManifestSigner`` embeds a claim with the actions, the
soft-binding (watermark) and the record id; ``ManifestReader`` reports whether a manifest is
present, valid and trusted, and summarises it. Both use c2pa-python's Builder / Signer / Reader
with an explicit ``Context`` so settings never leak through process-wide state.

An upload that arrives with its own C2PA manifest keeps its history: the signer records it as a
``parentOf`` ingredient (its manifest store copied in) and the first action is ``c2pa.opened``
instead of ``c2pa.created``. The reader reports each ingredient with its own signer and its own
validation: a trusted active manifest says nothing about whom to trust for the ingredient.
Signatures carry an RFC 3161 time-stamp when the signer is given a TSA URL (see ``tsa.py``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import c2pa

from provenance import PRODUCT_NAME, __version__
from provenance.errors import InvalidSourceTypeError, TimeStampError
from provenance.media import FORMATS, sniff_format
from provenance.pki import C2paCredentials

log = logging.getLogger(__name__)

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# The IPTC digital source types a caller may state for an upload.
SOURCE_TYPES = (
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
    "algorithmicallyEnhanced",
    "digitalCapture",
    "computationalCapture",
    "compositeCapture",
    "digitalArt",
    "humanEdits",
    "composite",
    "algorithmicMedia",
    "virtualRecording",
    "screenCapture",
    "negativeFilm",
    "positiveFilm",
    "print",
    "minorHumanEdits",
    "dataDrivenMedia",
)
DEFAULT_SOURCE_TYPE = "trainedAlgorithmicMedia"
RECORD_ASSERTION = "org.provenance.record"
SOFT_BINDING_ASSERTION = "c2pa.soft-binding"
SOFT_BINDING_ALG = "org.provenance.invisible-watermark.dwtDctSvd-rs"
# The ISCC image code, an algorithm on the C2PA soft-binding algorithm list.
FINGERPRINT_ALG = "io.iscc.v0"
# Links the c2pa.opened action to the parent ingredient; c2pa turns it into a hashed URI on signing.
PARENT_INGREDIENT_ID = "parent"
# Failure codes that only say "not on our trust list": the manifest itself checks out.
TRUST_ONLY_FAILURES = frozenset({"signingCredential.untrusted"})


def source_type_uri(source_type: str) -> str:
    """Map a short IPTC name (or its full URI) to the URI C2PA expects."""
    name = source_type.removeprefix(IPTC)
    if name not in SOURCE_TYPES:
        raise InvalidSourceTypeError(
            f"Unknown source_type {source_type!r}. Use one of the IPTC digital source types: " + ", ".join(SOURCE_TYPES)
        )
    return IPTC + name


@dataclass(frozen=True)
class ManifestContent:
    """What we put in a manifest, independent of the C2PA JSON shape."""

    record_id: str
    source_type: str = DEFAULT_SOURCE_TYPE
    watermark_id: int | None = None
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. generation parameters
    fingerprint: str | None = None  # the ISCC image code of the certified pixels


def _settings(credentials: C2paCredentials, *, thumbnail: bool) -> c2pa.Settings:
    settings = c2pa.Settings.from_dict(
        {
            "verify": {"remote_manifest_fetch": False, "verify_trust": True},
            "builder": {"thumbnail": {"enabled": thumbnail}},
        }
    )
    if credentials.trust_anchors_pem:
        settings.update({"trust": {"user_anchors": credentials.trust_anchors_pem.decode()}})
    return settings


def _is_not_found(exc: c2pa.C2paError) -> bool:
    message = str(exc)
    return "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in message or "not found" in message.lower()


def build_manifest_definition(
    content: ManifestContent, mime_type: str, *, parent_ingredient_id: str | None = None
) -> dict[str, Any]:
    """The manifest definition handed to ``c2pa.Builder``.

    With ``parent_ingredient_id`` the asset was opened from a parent that had its own manifest:
    C2PA requires the first action to be ``c2pa.opened`` naming that ingredient. The digital
    source type stays, since the pixels we sign are still described by it.
    """
    first_action: dict[str, Any] = {
        "action": "c2pa.opened" if parent_ingredient_id else "c2pa.created",
        "digitalSourceType": source_type_uri(content.source_type),
        "softwareAgent": {"name": PRODUCT_NAME, "version": __version__},
    }
    if parent_ingredient_id:
        first_action["parameters"] = {"ingredientIds": [parent_ingredient_id]}
    assertions: list[dict[str, Any]] = [
        {"label": "c2pa.actions.v2", "data": {"actions": [first_action]}},
        {
            "label": RECORD_ASSERTION,
            "data": {"record_id": content.record_id, "watermark_id": content.watermark_id, **content.extra},
        },
    ]
    if content.watermark_id is not None:
        assertions.append(
            {
                "label": SOFT_BINDING_ASSERTION,
                "data": {
                    "alg": SOFT_BINDING_ALG,
                    "blocks": [
                        {
                            "scope": {},
                            "value": base64.b64encode(content.watermark_id.to_bytes(4, "big")).decode(),
                        }
                    ],
                },
            }
        )
    if content.fingerprint is not None:
        # A second soft binding: it still finds the record when the mark is gone (crops, heavy edits).
        assertions.append(
            {
                "label": SOFT_BINDING_ASSERTION,
                "data": {"alg": FINGERPRINT_ALG, "blocks": [{"scope": {}, "value": content.fingerprint}]},
            }
        )
    return {
        "claim_generator_info": [{"name": PRODUCT_NAME, "version": __version__}],
        "title": content.title or f"{PRODUCT_NAME} record {content.record_id}",
        "format": mime_type,
        "assertions": assertions,
    }


class _IngredientRejectedError(Exception):
    """c2pa refused the upload's manifest as an ingredient (the cause says why)."""


@dataclass(frozen=True)
class _Parent:
    """An upload's own manifest, to be kept as the parent ingredient."""

    format: str
    title: str


class ManifestSigner:
    """Signs C2PA manifests into image bytes with ES256, time-stamped when given a TSA URL."""

    def __init__(self, credentials: C2paCredentials, *, thumbnail: bool = False, tsa_url: str | None = None) -> None:
        self._credentials = credentials
        self._thumbnail = thumbnail
        self._tsa_url = tsa_url

    @property
    def tsa_url(self) -> str | None:
        return self._tsa_url

    def sign(
        self, image_bytes: bytes, mime_type: str, content: ManifestContent, *, original: bytes | None = None
    ) -> bytes:
        """Return the image bytes with an embedded, signed manifest.

        ``original`` is the upload as it arrived, before watermarking and re-encoding (which drop
        any manifest it had). If it carries a C2PA manifest, that manifest becomes the parent
        ingredient and the first action is ``c2pa.opened``; otherwise nothing changes.
        """
        with c2pa.Context(settings=_settings(self._credentials, thumbnail=self._thumbnail)) as context:
            parent = self._parent(original, context) if original is not None else None
            if parent is not None and original is not None:
                try:
                    return self._sign(context, image_bytes, mime_type, content, (parent, original))
                except _IngredientRejectedError as exc:
                    # c2pa read the manifest but will not take it as an ingredient: certify the
                    # pixels anyway, as an upload without history, rather than refuse the upload.
                    log.warning("the upload's C2PA manifest could not be kept as an ingredient: %s", exc.__cause__)
            return self._sign(context, image_bytes, mime_type, content, None)

    def _parent(self, original: bytes, context: c2pa.Context) -> _Parent | None:
        """The upload's manifest as a parent ingredient, or None when it has none we can read."""
        fmt = sniff_format(original)
        if fmt is None:
            return None
        try:
            with c2pa.Reader(FORMATS[fmt], io.BytesIO(original), None, context) as reader:
                active = reader.get_active_manifest() or {}
        except c2pa.C2paError as exc:
            if not _is_not_found(exc):
                log.warning("the upload carries a C2PA manifest that cannot be read; certified without it: %s", exc)
            return None
        return _Parent(format=FORMATS[fmt], title=active.get("title") or "original upload")

    def _sign(
        self,
        context: c2pa.Context,
        image_bytes: bytes,
        mime_type: str,
        content: ManifestContent,
        parent: tuple[_Parent, bytes] | None,
    ) -> bytes:
        definition = build_manifest_definition(
            content, mime_type, parent_ingredient_id=PARENT_INGREDIENT_ID if parent else None
        )
        # ta_url: c2pa asks the TSA for a token over the signature (sigTst2) while signing.
        info = c2pa.C2paSignerInfo(
            c2pa.C2paSigningAlg.ES256, self._credentials.chain_pem, self._credentials.private_key_pem, self._tsa_url
        )
        with c2pa.Signer.from_info(info) as signer, c2pa.Builder(definition, context) as builder:
            if parent is not None:
                meta, original = parent
                # The ingredient API copies the parent's manifest store into ours and records the
                # parent's validation results as c2pa saw them at this moment.
                try:
                    builder.add_ingredient(
                        {"title": meta.title, "relationship": "parentOf", "label": PARENT_INGREDIENT_ID},
                        meta.format,
                        io.BytesIO(original),
                    )
                except c2pa.C2paError as exc:
                    raise _IngredientRejectedError() from exc
            source, dest = io.BytesIO(image_bytes), io.BytesIO()
            try:
                builder.sign(signer, mime_type, source, dest)
            except c2pa.C2paError.Signature as exc:
                # c2pa fetches the time-stamp inside sign(); a TSA that is down or answers garbage
                # surfaces here as a signature error. No manifest goes out without its time-stamp.
                if self._tsa_url:
                    raise TimeStampError(
                        f"C2PA signing with the time-stamp authority {self._tsa_url} failed: {exc}"
                    ) from exc
                raise
            return dest.getvalue()


@dataclass
class ManifestReport:
    """The C2PA check: present, valid, trusted, and what the active manifest says.

    ``valid`` and ``trusted`` are about the active manifest's own signature; ``ingredients`` reports
    each parent manifest with its own signer and trust, never inherited from the active one.
    ``time_stamp`` says whether the active signature carries an RFC 3161 time-stamp c2pa accepts.
    """

    present: bool
    valid: bool = False
    trusted: bool = False
    validation_state: str | None = None
    failures: list[str] = field(default_factory=list)
    record_id: str | None = None
    watermark_id: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    ingredients: list[dict[str, Any]] = field(default_factory=list)
    time_stamp: dict[str, Any] = field(default_factory=lambda: _time_stamp(_no_codes(), {}))

    def as_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "valid": self.valid,
            "trusted": self.trusted,
            "validation_state": self.validation_state,
            "failures": self.failures,
            "record_id": self.record_id,
            "summary": self.summary,
            "time_stamp": self.time_stamp,
            "ingredients": self.ingredients,
        }


def _summarise(manifest: dict[str, Any]) -> tuple[dict[str, Any], str | None, int | None]:
    record_id = watermark_id = generation = None
    actions: list[dict[str, Any]] = []
    soft_bindings: list[dict[str, Any]] = []
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data", {})
        if label.startswith("c2pa.actions"):
            actions.extend(data.get("actions", []))
        elif label.startswith(SOFT_BINDING_ASSERTION):
            soft_bindings += [{"alg": data.get("alg"), "value": b.get("value")} for b in data.get("blocks", [])]
        elif label == RECORD_ASSERTION:
            record_id, watermark_id = data.get("record_id"), data.get("watermark_id")
            generation = data.get("generation")
    signature = manifest.get("signature_info", {})
    summary = {
        "label": manifest.get("label"),
        "title": manifest.get("title"),
        "claim_generator": [
            f"{g.get('name')} {g.get('version', '')}".strip() for g in manifest.get("claim_generator_info", [])
        ],
        "actions": [{"action": a.get("action"), "digitalSourceType": a.get("digitalSourceType")} for a in actions],
        "signer": signature.get("common_name") or signature.get("issuer"),
        "issuer": signature.get("issuer"),
        "signed_at": signature.get("time"),
        "soft_bindings": soft_bindings,
    }
    if generation:
        summary["generation"] = generation
    return summary, record_id, watermark_id


Codes = dict[str, list[str]]  # "success" / "informational" / "failure" -> status codes
_KINDS = ("success", "informational", "failure")


def _no_codes() -> Codes:
    return {kind: [] for kind in _KINDS}


def _codes(results: dict[str, Any] | None) -> Codes:
    results = results or {}
    return {kind: [str(item.get("code")) for item in results.get(kind) or []] for kind in _KINDS}


def _check(code: str) -> str:
    """The check a status code reports on: ``signingCredential.untrusted`` -> ``signingCredential``."""
    return code.rsplit(".", 1)[0]


def _apply_deltas(recorded: Codes, deltas: Codes) -> Codes:
    """An ingredient's status now: what was recorded at signing, overridden by the reader's deltas.

    C2PA stores the ingredient's validation results as its signer saw them; a validator reports
    only where its own result differs (the "ingredient deltas"). A delta replaces every recorded
    entry about the same check, so an ingredient recorded as trusted but untrusted here reads
    as untrusted, and the other way round.
    """
    replaced = {_check(code) for kind in _KINDS for code in deltas[kind]}
    return {kind: [c for c in recorded[kind] if _check(c) not in replaced] + deltas[kind] for kind in _KINDS}


def _time_stamp(codes: Codes, signature: dict[str, Any]) -> dict[str, Any]:
    """Whether the signature carries an RFC 3161 time-stamp, and what c2pa made of it."""
    stamp_codes = [code for kind in _KINDS for code in codes[kind] if code.startswith("timeStamp.")]
    return {
        "present": bool(stamp_codes),
        "validated": "timeStamp.validated" in codes["success"],  # the token matches this signature
        "trusted": "timeStamp.trusted" in codes["success"],  # the TSA chains to a trust anchor
        "time": signature.get("time") if stamp_codes else None,
        "codes": stamp_codes,
    }


def _state(codes: Codes) -> tuple[bool, bool]:
    """(valid, trusted) from one manifest's own status codes."""
    valid = all(code in TRUST_ONLY_FAILURES for code in codes["failure"])
    trusted = valid and not codes["failure"] and "signingCredential.trusted" in codes["success"]
    return valid, trusted


MAX_INGREDIENT_DEPTH = 16  # a chain deeper than this is reported truncated, not walked


def _ingredients(
    store: dict[str, Any], manifest_label: str, deltas: dict[str, Codes], depth: int = 0
) -> list[dict[str, Any]]:
    """Each ingredient of one manifest, with its own manifest's signer and validation, recursively."""
    manifests = store.get("manifests", {})
    reports: list[dict[str, Any]] = []
    for ingredient in manifests.get(manifest_label, {}).get("ingredients", []):
        label = ingredient.get("active_manifest")
        manifest = manifests.get(label, {}) if label else {}
        report: dict[str, Any] = {
            "title": ingredient.get("title"),
            "relationship": ingredient.get("relationship"),
            "format": ingredient.get("format"),
            "has_manifest": bool(label),
        }
        if label:
            uri = f"self#jumbf=/c2pa/{manifest_label}/c2pa.assertions/{ingredient.get('label')}"
            recorded = _codes((ingredient.get("validation_results") or {}).get("activeManifest"))
            codes = _apply_deltas(recorded, deltas.get(uri, _no_codes()))
            valid, trusted = _state(codes)
            summary, _, _ = _summarise(manifest)
            report.update(
                manifest=label,
                claim_generator=summary["claim_generator"],
                signer=summary["signer"],
                issuer=summary["issuer"],
                actions=summary["actions"],
                valid=valid,
                trusted=trusted,
                validation_state="Trusted" if trusted else "Valid" if valid else "Invalid",
                validation=codes,
                time_stamp=_time_stamp(codes, manifest.get("signature_info", {})),
                ingredients=(
                    _ingredients(store, label, deltas, depth + 1)
                    if depth < MAX_INGREDIENT_DEPTH
                    else [{"truncated": True}]
                ),
            )
        reports.append(report)
    return reports


class ManifestReader:
    """Reads and validates C2PA manifests, trusting the configured anchors."""

    def __init__(self, credentials: C2paCredentials) -> None:
        self._credentials = credentials

    def read(self, image_bytes: bytes, mime_type: str) -> ManifestReport:
        with c2pa.Context(settings=_settings(self._credentials, thumbnail=False)) as context:
            try:
                reader = c2pa.Reader(mime_type, io.BytesIO(image_bytes), None, context)
            except c2pa.C2paError as exc:
                if _is_not_found(exc):
                    return ManifestReport(present=False)
                return ManifestReport(present=True, valid=False, validation_state="Invalid", failures=[str(exc)])
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
        active_label = store.get("active_manifest", "")
        active = store.get("manifests", {}).get(active_label, {})
        summary, record_id, watermark_id = _summarise(active)
        failures = [
            f"{item.get('code')}: {item.get('explanation', '')}".strip()
            for item in results.get("activeManifest", {}).get("failure", [])
        ]
        deltas = {
            delta.get("ingredientAssertionURI", ""): _codes(delta.get("validationDeltas"))
            for delta in results.get("ingredientDeltas") or []
        }
        # An ingredient that no longer matches what the active manifest signed for (its manifest
        # swapped or edited in the file) breaks this file's provenance, not only the ingredient's:
        # a failure beyond trust in the deltas fails the whole report. Failures recorded at
        # signing time are history (the parent was already broken) and stay with the ingredient.
        broken_ingredients = [
            f"ingredient {uri}: {code}"
            for uri, codes in deltas.items()
            for code in codes["failure"]
            if code not in TRUST_ONLY_FAILURES
        ]
        failures += broken_ingredients
        active_codes = _codes(results.get("activeManifest"))
        valid, trusted = _state(active_codes)
        # c2pa's overall state also drops to Valid when only an ingredient's signer is untrusted,
        # so the active manifest's trust is judged on its own codes above. An "Invalid" state with
        # no failure anywhere to explain it is still taken at c2pa's word.
        explained = bool(active_codes["failure"]) or any(codes["failure"] for codes in deltas.values())
        valid = valid and not broken_ingredients and (state in ("Valid", "Trusted") or explained)
        trusted = trusted and valid
        return ManifestReport(
            present=True,
            valid=valid,
            trusted=trusted,
            validation_state=state,
            failures=failures,
            record_id=record_id,
            watermark_id=watermark_id,
            summary=summary,
            ingredients=_ingredients(store, active_label, deltas),
            time_stamp=_time_stamp(active_codes, active.get("signature_info", {})),
        )
