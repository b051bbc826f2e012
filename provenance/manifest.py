"""Stage 3, C2PA: sign a manifest into the image, and read one back.

Signing and reading mirror each other: ``ManifestSigner`` embeds a claim with the actions, the
soft-binding (watermark) and the record id; ``ManifestReader`` reports whether a manifest is
present, valid and trusted, and summarises it. Both use c2pa-python's Builder / Signer / Reader
with an explicit ``Context`` so settings never leak through process-wide state.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import c2pa

from provenance import PRODUCT_NAME, __version__
from provenance.errors import InvalidSourceTypeError
from provenance.pki import C2paCredentials

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


def build_manifest_definition(content: ManifestContent, mime_type: str) -> dict[str, Any]:
    """The manifest definition handed to ``c2pa.Builder``."""
    assertions: list[dict[str, Any]] = [
        {
            "label": "c2pa.actions.v2",
            "data": {
                "actions": [
                    {
                        "action": "c2pa.created",
                        "digitalSourceType": source_type_uri(content.source_type),
                        "softwareAgent": {"name": PRODUCT_NAME, "version": __version__},
                    }
                ]
            },
        },
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
    return {
        "claim_generator_info": [{"name": PRODUCT_NAME, "version": __version__}],
        "title": content.title or f"{PRODUCT_NAME} record {content.record_id}",
        "format": mime_type,
        "assertions": assertions,
    }


class ManifestSigner:
    """Signs C2PA manifests into image bytes with ES256."""

    def __init__(self, credentials: C2paCredentials, *, thumbnail: bool = False) -> None:
        self._credentials = credentials
        self._thumbnail = thumbnail

    def sign(self, image_bytes: bytes, mime_type: str, content: ManifestContent) -> bytes:
        """Return the image bytes with an embedded, signed manifest."""
        definition = build_manifest_definition(content, mime_type)
        info = c2pa.C2paSignerInfo(
            c2pa.C2paSigningAlg.ES256, self._credentials.chain_pem, self._credentials.private_key_pem, None
        )
        with (
            c2pa.Context(settings=_settings(self._credentials, thumbnail=self._thumbnail)) as context,
            c2pa.Signer.from_info(info) as signer,
            c2pa.Builder(definition, context) as builder,
        ):
            source, dest = io.BytesIO(image_bytes), io.BytesIO()
            builder.sign(signer, mime_type, source, dest)
            return dest.getvalue()


@dataclass
class ManifestReport:
    """The C2PA check: present, valid, trusted, and what the active manifest says."""

    present: bool
    valid: bool = False
    trusted: bool = False
    validation_state: str | None = None
    failures: list[str] = field(default_factory=list)
    record_id: str | None = None
    watermark_id: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "valid": self.valid,
            "trusted": self.trusted,
            "validation_state": self.validation_state,
            "failures": self.failures,
            "record_id": self.record_id,
            "summary": self.summary,
        }


def _summarise(manifest: dict[str, Any]) -> tuple[dict[str, Any], str | None, int | None]:
    record_id = watermark_id = generation = None
    actions: list[dict[str, Any]] = []
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data", {})
        if label.startswith("c2pa.actions"):
            actions.extend(data.get("actions", []))
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
    }
    if generation:
        summary["generation"] = generation
    return summary, record_id, watermark_id


class ManifestReader:
    """Reads and validates C2PA manifests, trusting the configured anchors."""

    def __init__(self, credentials: C2paCredentials) -> None:
        self._credentials = credentials

    def read(self, image_bytes: bytes, mime_type: str) -> ManifestReport:
        with c2pa.Context(settings=_settings(self._credentials, thumbnail=False)) as context:
            try:
                reader = c2pa.Reader(mime_type, io.BytesIO(image_bytes), None, context)
            except c2pa.C2paError as exc:
                message = str(exc)
                if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in message or "not found" in message.lower():
                    return ManifestReport(present=False)
                return ManifestReport(present=True, valid=False, validation_state="Invalid", failures=[message])
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
        active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
        summary, record_id, watermark_id = _summarise(active)
        failures = [
            f"{item.get('code')}: {item.get('explanation', '')}".strip()
            for item in results.get("activeManifest", {}).get("failure", [])
        ]
        untrusted_only = all("signingCredential.untrusted" in f for f in failures)
        return ManifestReport(
            present=True,
            valid=state in ("Valid", "Trusted") or (bool(failures) and untrusted_only),
            trusted=state == "Trusted",
            validation_state=state,
            failures=failures,
            record_id=record_id,
            watermark_id=watermark_id,
            summary=summary,
        )
