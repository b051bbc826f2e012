"""Signing: a C2PA manifest built from ``ManifestContent`` and signed into the image bytes.

An upload that arrives with its own C2PA manifest keeps its history: the signer records it as a
``parentOf`` ingredient (its manifest store copied in) and the first action is ``c2pa.opened``
instead of ``c2pa.created``. Signatures carry an RFC 3161 time-stamp when the signer is given a TSA
URL (see ``tsa.py``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import c2pa

from provenance import PRODUCT_NAME, __version__
from provenance.errors import TimeStampError
from provenance.manifests.pki import C2paCredentials
from provenance.manifests.vocabulary import (
    FINGERPRINT_ALG,
    PARENT_INGREDIENT_ID,
    RECORD_ASSERTION,
    SOFT_BINDING_ALG,
    SOFT_BINDING_ASSERTION,
    UPLOAD_INGREDIENT_ID,
    ManifestContent,
    c2pa_settings,
    is_manifest_not_found,
    source_type_uri,
)
from provenance.media import FORMATS, sniff_format

# The logger keeps the name it had before the module was split: log configurations and filters name it.
log = logging.getLogger("provenance.manifests.manifest")


def build_manifest_definition(
    content: ManifestContent, mime_type: str, *, parent_ingredient_id: str | None = None
) -> dict[str, Any]:
    """The manifest definition handed to ``c2pa.Builder``.

    With ``parent_ingredient_id`` the asset was opened from a parent that had its own manifest:
    C2PA requires the first action to be ``c2pa.opened`` naming that ingredient. A stated digital
    source type stays on it, since the pixels we sign are still described by it.

    Without a source type the manifest makes no digital-source-type claim at all. C2PA 2.x (and
    c2pa-rs, which refuses to sign otherwise: ``assertion.action.malformed``) requires a
    ``digitalSourceType`` on ``c2pa.created``, and the first action must be ``c2pa.created`` or
    ``c2pa.opened``; so such a manifest says ``c2pa.opened`` of the uploaded image, recorded as a
    plain ``parentOf`` ingredient without a manifest (``UPLOAD_INGREDIENT_ID``). That is what
    happened, validates without a warning, and c2pa adds no source type of its own.
    """
    source = source_type_uri(content.source_type) if content.source_type is not None else None
    ingredients: list[dict[str, Any]] = []
    opened_from = parent_ingredient_id
    if parent_ingredient_id is None and source is None:
        opened_from = UPLOAD_INGREDIENT_ID
        ingredients.append(
            {"title": "uploaded image", "format": mime_type, "relationship": "parentOf", "label": UPLOAD_INGREDIENT_ID}
        )
    first_action: dict[str, Any] = {
        "action": "c2pa.opened" if opened_from else "c2pa.created",
        "softwareAgent": {"name": PRODUCT_NAME, "version": __version__},
    }
    if source is not None:
        first_action["digitalSourceType"] = source
    if opened_from:
        first_action["parameters"] = {"ingredientIds": [opened_from]}
    elif content.ingredients:  # a generated image names its model and dataset inputs (``inputTo`` ingredients)
        first_action["parameters"] = {"ingredientIds": [i["label"] for i in content.ingredients]}
    ingredients.extend(dict(i) for i in content.ingredients)
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
    definition: dict[str, Any] = {
        "claim_generator_info": [{"name": PRODUCT_NAME, "version": __version__}],
        "title": content.title or f"{PRODUCT_NAME} record {content.record_id}",
        "format": mime_type,
        "assertions": assertions,
    }
    if ingredients:
        definition["ingredients"] = ingredients
    if content.label is not None:
        definition["label"] = content.label
    return definition


class _IngredientRejectedError(Exception):
    """c2pa refused the upload's manifest as an ingredient (the cause says why)."""


@dataclass(frozen=True)
class _Parent:
    """An upload's own manifest, to be kept as the parent ingredient."""

    format: str
    title: str


@dataclass(frozen=True)
class SignedImage:
    """Signed bytes, and what signing had to leave out (the upload's manifest, and why), if anything."""

    data: bytes
    note: str | None = None


def _reason(exc: BaseException) -> str:
    """One line, at most 200 characters, of what an exception says (it can quote the file)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


class ManifestSigner:
    """Signs C2PA manifests into image bytes with ES256, time-stamped when given a TSA URL."""

    def __init__(self, credentials: C2paCredentials, *, thumbnail: bool = False, tsa_url: str | None = None) -> None:
        self._credentials = credentials
        self._thumbnail = thumbnail
        self._tsa_url = tsa_url

    @property
    def tsa_url(self) -> str | None:
        """The time-stamp authority signatures are stamped by (None: no time-stamp)."""
        return self._tsa_url

    def sign(
        self, image_bytes: bytes, mime_type: str, content: ManifestContent, *, original: bytes | None = None
    ) -> bytes:
        """Return the image bytes with an embedded, signed manifest (see ``sign_noted``)."""
        return self.sign_noted(image_bytes, mime_type, content, original=original).data

    def sign_noted(
        self, image_bytes: bytes, mime_type: str, content: ManifestContent, *, original: bytes | None = None
    ) -> SignedImage:
        """Sign, and say what had to be left out.

        ``original`` is the upload as it arrived, before watermarking and re-encoding (which drop
        any manifest it had). If it carries a C2PA manifest, that manifest becomes the parent
        ingredient and the first action is ``c2pa.opened``. A manifest that cannot be read or kept
        (malformed, remote, refused by c2pa as an ingredient, or failing c2pa's checks at signing)
        never fails the signing: the pixels are signed as an upload without history, and the note
        says why, for the record.
        """
        with c2pa.Context(settings=c2pa_settings(self._credentials, thumbnail=self._thumbnail)) as context:
            parent, note = self._parent(original, context) if original is not None else (None, None)
            if parent is not None and original is not None:
                try:
                    return SignedImage(self._sign(context, image_bytes, mime_type, content, (parent, original)))
                except TimeStampError:
                    raise  # the TSA failed, not the parent: no manifest goes out without its time-stamp
                except Exception as exc:  # any refusal of the parent leaves the upload certifiable
                    cause = exc.__cause__ if isinstance(exc, _IngredientRejectedError) and exc.__cause__ else exc
                    note = f"the upload's C2PA manifest could not be kept as its parent ingredient: {_reason(cause)}"
                    log.warning("%s; certified without it", note)
            return SignedImage(self._sign(context, image_bytes, mime_type, content, None), note)

    def _parent(self, original: bytes, context: c2pa.Context) -> tuple[_Parent | None, str | None]:
        """The upload's manifest as a parent ingredient; or None, with the reason when it has one we cannot use."""
        fmt = sniff_format(original)
        if fmt is None:
            return None, None
        try:
            with c2pa.Reader(FORMATS[fmt], io.BytesIO(original), None, context) as reader:
                store = json.loads(reader.json())
            active = store["manifests"][store["active_manifest"]]
        except c2pa.C2paError as exc:
            if is_manifest_not_found(exc):
                return None, None
            note = f"the upload's C2PA manifest cannot be read ({_reason(exc)}); certified without it"
            log.warning("%s", note)
            return None, note
        except Exception as exc:  # malformed stores: KeyError, TypeError, ValueError
            note = f"the upload's C2PA manifest cannot be read (no usable active manifest: {_reason(exc)})"
            log.warning("%s; certified without it", note)
            return None, note
        title = active.get("title") if isinstance(active, dict) else None
        usable_title = title if isinstance(title, str) and title else "original upload"
        return _Parent(format=FORMATS[fmt], title=usable_title), None

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
