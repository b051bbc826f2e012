"""Certify, verify and NFT builders: the stage pipelines, their components in their slots."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from provenance.certify.certifier import Certifier
from provenance.chain.setup import ChainConnection
from provenance.config import Settings
from provenance.db.models import Record
from provenance.db.repository import NftRepository
from provenance.lineage.image import LineageResolver
from provenance.lineage.report import LineageChecker
from provenance.lineage.royalties import CACHE_FILE, RoyaltySplits
from provenance.manifests.manifest import ManifestReader, ManifestSigner
from provenance.manifests.tsa import open_time_stamp_authority
from provenance.media import StructureLimits
from provenance.nft.service import NftService
from provenance.runtime.marks import Marks
from provenance.runtime.storage import Storage
from provenance.verify.verifier import Verifier


def structure_limits(settings: Settings) -> StructureLimits:
    """What an upload may carry besides its pixels, from the settings (the rest: the decoder's defaults)."""
    return StructureLimits(
        max_metadata_bytes=settings.max_metadata_bytes, max_metadata_chunks=settings.max_metadata_chunks
    )


@dataclass(frozen=True)
class TimeStamping:
    """The RFC 3161 authority the C2PA signer uses (None: none) and how to stop it if it is the local one."""

    url: str | None
    close: Callable[[], None]


def open_time_stamping(settings: Settings, opened: contextlib.ExitStack, *, signing: bool) -> TimeStamping:
    """The time-stamp authority every manifest is stamped by (the local one for the embedded CA).

    ``signing=False`` (commands that only read) starts none. Closed through ``opened`` if a later step fails.
    """
    url, close = open_time_stamp_authority(settings, settings.resolved_data_dir / "c2pa", needed=signing)
    opened.callback(close)
    return TimeStamping(url, close)


def open_certifier(
    settings: Settings,
    storage: Storage,
    marks: Marks,
    tsa_url: str | None,
    on_recorded: Callable[[Record], None] | None,
    limits: StructureLimits,
) -> Certifier:
    """The certify pipeline; ``on_recorded`` wakes the anchor worker when a record is written."""
    return Certifier(
        repository=storage.repository,
        keys=storage.keys,
        manifest_signer=ManifestSigner(storage.credentials, thumbnail=settings.c2pa_thumbnail, tsa_url=tsa_url),
        store=storage.store,
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        watermarker=marks.watermarker if settings.watermark_enabled else None,
        fingerprinter=marks.fingerprints.fingerprinter,
        fingerprint_index=marks.fingerprints.index,
        on_recorded=on_recorded,
        structure_limits=limits,
        lineage=LineageResolver(storage.sessions),
    )


def open_verifier(
    settings: Settings, storage: Storage, chain: ChainConnection, marks: Marks, limits: StructureLimits
) -> Verifier:
    """The verify pipeline: it reads marks even when new certifications are unmarked."""
    return Verifier(
        repository=storage.repository,
        manifest_reader=ManifestReader(storage.credentials),
        store=storage.store,
        registry=chain.registry,
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        watermarker=marks.watermarker,
        fingerprinter=marks.fingerprints.fingerprinter,
        fingerprint_index=marks.fingerprints.index,
        structure_limits=limits,
        lineage=LineageChecker(storage.sessions, chain.registry),
    )


def open_nft(settings: Settings, storage: Storage, chain: ChainConnection) -> NftService:
    """Minting and vouchers on the NFT contract for certified records."""
    return NftService(
        storage.repository,
        NftRepository(storage.sessions),
        storage.store,
        chain.nft,
        voucher_ttl_s=settings.voucher_ttl_s,
        royalties=RoyaltySplits(
            storage.sessions,
            settings.resolved_data_dir / CACHE_FILE,
            certifier=settings.royalty_certifier_address,
            timeout_s=settings.tx_timeout_s,
        ),
    )
