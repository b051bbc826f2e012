"""What a manifest says, in this project's words: source types, assertion labels, ``ManifestContent``.

Shared by the signing side (``provenance.manifests.builder``) and the reading side
(``provenance.manifests.reader``), with the c2pa settings both use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import c2pa

from provenance.errors import InvalidSourceTypeError
from provenance.manifests.pki import C2paCredentials

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
# What generated images state; an upload states only what its certifier claims (or nothing).
GENERATED_SOURCE_TYPE = "trainedAlgorithmicMedia"
RECORD_ASSERTION = "org.provenance.record"
SOFT_BINDING_ASSERTION = "c2pa.soft-binding"
SOFT_BINDING_ALG = "org.provenance.invisible-watermark.dwtDctSvd-rs"
# The ISCC image code, an algorithm on the C2PA soft-binding algorithm list.
FINGERPRINT_ALG = "io.iscc.v0"
# Links the c2pa.opened action to the parent ingredient; c2pa turns it into a hashed URI on signing.
PARENT_INGREDIENT_ID = "parent"
# The upload itself as a plain parentOf ingredient (no manifest), for a manifest that makes no source-type claim.
UPLOAD_INGREDIENT_ID = "upload"


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
    source_type: str | None = None  # the certifier's IPTC digital source type; None: no claim is made
    watermark_id: int | None = None
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. generation parameters
    fingerprint: str | None = None  # the ISCC image code of the certified pixels
    # C2PA ingredient definitions of what made the image (models, datasets: ``provenance.lineage.image``)
    ingredients: tuple[dict[str, Any], ...] = ()
    # The manifest's label (``urn:c2pa:<uuid>``), chosen by the certifier so the record knows its manifest id (the
    # C2PA soft-binding API names manifests by it) without reading the signed file back; None: c2pa chooses one.
    label: str | None = None


def c2pa_settings(credentials: C2paCredentials, *, thumbnail: bool) -> c2pa.Settings:
    """c2pa settings for one context: never fetch remote manifests, verify trust against our anchors."""
    settings = c2pa.Settings.from_dict(
        {
            "verify": {"remote_manifest_fetch": False, "verify_trust": True},
            "builder": {"thumbnail": {"enabled": thumbnail}},
        }
    )
    if credentials.trust_anchors_pem:
        settings.update({"trust": {"user_anchors": credentials.trust_anchors_pem.decode()}})
    return settings


def is_manifest_not_found(exc: c2pa.C2paError) -> bool:
    """Whether c2pa's error says the file has no manifest at all (not that one is broken)."""
    message = str(exc)
    return "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in message or "not found" in message.lower()
