"""Certification: input -> lookup -> mark -> manifest -> hash and sign -> pin -> record -> anchor.

``Certifier.certify`` runs the stages in the order the product works. Nothing is left half
written: the record is inserted only once every earlier stage succeeded, and a failed insert
unpins what this call pinned. Anchoring on chain happens after the response, in the
``AnchorWorker``; the record starts ``pending``.

Before anything is marked, an upload is looked up the way verify looks it up (exact hash, trusted
manifest, confirmed mark bound to its content, confirmed fingerprint): content that belongs to another
account's record is refused (409 ``already_certified`` naming the record), so nobody can launder
someone else's work by certifying a copy. A caller who made something new from it declares it with
``derived_from``: the record keeps that source, its C2PA manifest takes the source as its
``parentOf`` ingredient, and verify names the source's account as the origin.

The digital source type is the caller's claim: without one the manifest makes no source-type claim
(no "made by AI" label on a photograph). Generated images state ``trainedAlgorithmicMedia``.
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from provenance import media
from provenance.db.models import Record, RecordStatus
from provenance.db.repository import RecordRepository, new_record_id
from provenance.errors import AlreadyCertifiedError, DerivativeError, ProvenanceError
from provenance.ipfs import ContentStore
from provenance.lineage.image import lineage_ingredients
from provenance.manifests.manifest import ManifestContent, ManifestSigner, source_type_uri
from provenance.marks import watermark
from provenance.marks.fingerprint import Fingerprinter, ImageFingerprints
from provenance.marks.fingerprint_backend import FingerprintBackend
from provenance.observability import metrics
from provenance.signing import KeyStore, sha256_hex


@dataclass
class CertifiedImage:
    """The outcome of one certification: the stored record and the certified bytes."""

    record: Record
    data: bytes
    timings_ms: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


@dataclass(frozen=True)
class Identification:
    """What an upload already is: the record its content belongs to (if any), and whether it has a manifest."""

    record: Record | None
    manifest_present: bool


class LineageSource(Protocol):
    """Resolves what made a generated image (``provenance.lineage.image.LineageResolver``)."""

    def resolve(self, generation: dict[str, Any]) -> dict[str, Any]:
        """``generation["lineage"]``: the base model, the LoRAs and their datasets, registered or not."""
        ...


class Identifier(Protocol):
    """Looks an upload up the way verify does (``Verifier.identify``)."""

    def identify(self, data: bytes, rgb: np.ndarray, mime_type: str, *, owner: str | None) -> Identification:
        """What the service already knows of the upload (its record, whether it carries a manifest)."""
        ...


@dataclass
class CertifyOptions:
    """What the caller says about an upload to certify (all optional)."""

    source_type: str | None = None  # the caller's IPTC digital source type; None: no claim is made
    derived_from: str | None = None  # a declared derivative: the record whose content this was made from
    filename: str | None = None
    title: str | None = None
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] | None = None  # generated images: recorded and put in the manifest
    job_id: str | None = None
    account_id: str | None = None  # the account that certifies (API key's, or the admin account for the CLI)


class Certifier:
    """Runs the certification stages; every component is injected and swappable."""

    def __init__(
        self,
        *,
        repository: RecordRepository,
        keys: KeyStore,
        manifest_signer: ManifestSigner,
        store: ContentStore,
        max_upload_bytes: int,
        max_pixels: int,
        watermarker: watermark.Watermarker | None = None,
        fingerprinter: Fingerprinter | None = None,
        fingerprint_index: FingerprintBackend | None = None,
        on_recorded: Callable[[Record], None] | None = None,
        identifier: Identifier | None = None,
        structure_limits: media.StructureLimits | None = None,
        lineage: LineageSource | None = None,
    ) -> None:
        self.repository = repository
        self.keys = keys
        self.structure_limits = structure_limits or media.STRUCTURE_LIMITS  # what an upload may carry besides pixels
        self.manifest_signer = manifest_signer
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels
        self.watermarker = watermarker  # None: certify without a mark (the record says so)
        self.fingerprinter = fingerprinter  # None: no fingerprint soft binding, no lookup by similarity
        self.fingerprint_index = fingerprint_index
        self.on_recorded = on_recorded
        self.identifier = identifier  # None: no lookup before certifying (nothing stops laundering)
        self._known_keys: set[str] = set()
        self.lineage = lineage  # None: generated images carry no lineage (no models registry wired)

    def _new_watermark_id(self) -> int:
        while True:
            candidate = secrets.randbits(32)
            if candidate and not self.repository.watermark_taken(candidate):
                return candidate

    def _declared_source(self, options: CertifyOptions) -> Record | None:
        if options.derived_from is None:
            return None
        source = self.repository.get(options.derived_from)
        if source is None:
            raise DerivativeError(f"derived_from names no record of this service: {options.derived_from!r}")
        return source

    def _refuse_laundering(self, found: Record | None, options: CertifyOptions) -> None:
        """Refuse content that belongs to another account's record, unless declared as derived from it."""
        if found is None or found.account_id == options.account_id:
            return  # new content, or the owner certifying their own work again
        if options.derived_from == found.id:
            return
        raise AlreadyCertifiedError(
            f"This image is already certified by another account (record {found.id}). If yours is a derivative "
            f"of it, certify it with derived_from={found.id}.",
            record_id=found.id,
        )

    def certify(self, data: bytes, options: CertifyOptions | None = None) -> CertifiedImage:
        """Certify an upload: decode, mark, fingerprint, sign a manifest in, hash and sign, pin and record it."""
        options = options or CertifyOptions()
        if options.source_type is not None:
            source_type_uri(options.source_type)  # refuse a bad source type before any work
        source = self._declared_source(options)
        timer = _Timer()

        with timer.stage("decode"):
            image = media.decode(
                data, max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels, limits=self.structure_limits
            )

        parent = data  # where the parent manifest, if any, comes from
        if self.identifier is not None and options.generation is None:  # a fresh render belongs to nobody yet
            with timer.stage("lookup"):
                found = self.identifier.identify(data, image.rgb, image.mime_type, owner=options.account_id)
            self._refuse_laundering(found.record, options)
            if source is not None and not found.manifest_present:
                # The derivative keeps its source as the parentOf ingredient, even when the copy lost its manifest.
                with contextlib.suppress(ProvenanceError):
                    parent = self.store.cat(source.cid)

        record_id = new_record_id()
        watermark_id: int | None = None
        mark_reference: bytes | None = None
        note: str | None = None
        with timer.stage("watermark"):
            if image.notes:
                note = "; ".join(image.notes)
            if self.watermarker is None:
                note = "; ".join([*image.notes, "watermarking disabled by configuration"])
            elif not self.watermarker.can_mark(image.width, image.height):
                note = "; ".join(
                    [*image.notes, f"image too small to watermark ({image.width}x{image.height}; at least 256x256)"]
                )
            else:
                watermark_id = self._new_watermark_id()
                marked_picture = self.watermarker.mark(image.rgb, watermark_id)
                image.rgb = marked_picture.rgb
                if marked_picture.luma_reference is not None:
                    mark_reference = marked_picture.luma_reference.to_bytes()

        with timer.stage("encode"):
            marked = media.encode(image)

        fingerprints: ImageFingerprints | None = None
        if self.fingerprinter is not None:
            with timer.stage("fingerprint"):
                fingerprints = self.fingerprinter.compute(image.rgb)  # of the marked pixels that are certified

        ingredients: tuple[dict[str, Any], ...] = ()
        if options.generation is not None and self.lineage is not None:
            with timer.stage("lineage"):  # the base model, LoRAs and datasets: recorded and C2PA ingredients
                lineage = self.lineage.resolve(options.generation)
                options.generation = {**options.generation, "lineage": lineage}
                ingredients = tuple(lineage_ingredients(lineage))

        with timer.stage("c2pa"):
            manifest_label = f"urn:c2pa:{uuid.uuid4()}"
            content = ManifestContent(
                record_id=record_id,
                source_type=options.source_type,
                watermark_id=watermark_id,
                title=options.title,
                extra={**options.extra_manifest, **({"generation": options.generation} if options.generation else {})},
                fingerprint=fingerprints.iscc if fingerprints is not None else None,
                ingredients=ingredients,
                label=manifest_label,
            )
            signed = self.manifest_signer.sign_noted(marked, image.mime_type, content, original=parent)
            final = signed.data  # signed.note: an upload manifest that could not be kept, and why

        with timer.stage("hash_sign"):
            digest = sha256_hex(final)
            key = self.keys.active()
            signature = key.sign(final)

        with timer.stage("cid_pin"):
            pinned = self.store.add(final)

        record = Record(
            id=record_id,
            sha256=digest,
            cid=pinned.cid,
            signature=signature,
            key_id=key.key_id,
            media_type=image.mime_type,
            size_bytes=len(final),
            width=image.width,
            height=image.height,
            source_type=options.source_type,
            watermark_id=watermark_id,
            watermarked=watermark_id is not None,
            watermark_note=note,
            original_filename=(options.filename or None) and options.filename[:255],
            status=RecordStatus.PENDING,
            generation=options.generation,
            job_id=options.job_id,
            account_id=options.account_id,
            derived_from=source.id if source is not None else None,
            mark_layout=watermark.LAYOUT_VERSION if watermark_id is not None else None,
            certify_note=signed.note,
            manifest_label=manifest_label,  # the manifest id the C2PA soft-binding API names this record's manifest by
        )
        with timer.stage("database"):
            try:
                if key.key_id not in self._known_keys:  # a rotated key is recorded with its first record
                    self.repository.ensure_key(key.key_id, key.public_key_pem)
                    self._known_keys.add(key.key_id)
                self.repository.add(record, fingerprints, mark_reference)
            except BaseException:
                if pinned.created:
                    self.store.remove(pinned.cid)
                raise
        if fingerprints is not None and self.fingerprint_index is not None:
            self.fingerprint_index.add(record.id, fingerprints)  # searchable at once on this instance
        if self.on_recorded is not None:
            # The record is pending either way; the anchor worker retries if this nudge fails.
            with timer.stage("chain_submit"), contextlib.suppress(ProvenanceError):
                self.on_recorded(record)
        kind = metrics.certification_kind(options.generation is not None, source is not None)
        metrics.CERTIFICATIONS.labels(kind).inc()
        return CertifiedImage(record=record, data=final, timings_ms=timer.ms)
