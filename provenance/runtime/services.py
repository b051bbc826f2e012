"""The composition root: ``Services.open`` runs the subsystem builders in order; the API and the CLI use the result.

Each builder (``storage``, ``marks``, ``chain``, ``pipelines``, ``access``, ``jobs`` in this package)
takes the settings and the parts it needs and returns its own small, typed parts. What starts a
process, thread or port registers its release on one ``ExitStack``, so a failed start closes what
it opened, newest first. Nothing module-level is changed: each component gets its values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from provenance.anchoring.anchor import Anchorer, AnchorWorker
from provenance.auth import AccountRepository, Limits
from provenance.certify.certifier import Certifier
from provenance.chain.setup import ChainConnection
from provenance.chain.writer import ChainWriting
from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.ipfs import ContentStore
from provenance.jobs.reproduce import ReproduceParts
from provenance.jobs.service import JobService
from provenance.lineage.models import ModelRegistry
from provenance.manifests.pki import C2paCredentials
from provenance.media import StructureLimits
from provenance.media.budget import PixelBudget
from provenance.nft.service import NftService
from provenance.runtime.access import open_access
from provenance.runtime.chain import open_anchoring, open_chain_parts
from provenance.runtime.jobs import open_jobs
from provenance.runtime.marks import Marks, open_fingerprints, read_watermarker
from provenance.runtime.models import open_models
from provenance.runtime.pipelines import (
    open_certifier,
    open_nft,
    open_time_stamping,
    open_verifier,
    structure_limits,
)
from provenance.runtime.storage import open_storage, open_store
from provenance.signing import KeyStore
from provenance.verify.verifier import Verifier

__all__ = ["Services", "open_jobs", "open_store"]


@dataclass
class Services:
    """Every part the API and the CLI use, opened from ``Settings`` by ``open`` and released by ``close``."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    repository: RecordRepository
    keys: KeyStore
    credentials: C2paCredentials
    store: ContentStore
    chain: ChainConnection
    writing: ChainWriting = field(repr=False)  # the writer lease (CLI: services.writing.lease)
    anchorer: Anchorer
    worker: AnchorWorker | None
    tsa_url: str | None  # RFC 3161 authority the C2PA signer uses
    close_tsa: Callable[[], None] = field(repr=False)
    structure_limits: StructureLimits  # what an upload may carry besides pixels (media.check_limits)
    certifier: Certifier
    verifier: Verifier
    accounts: AccountRepository
    admin_account_id: str  # the account behind <data_dir>/admin.key; the CLI acts as it
    limits: Limits
    pixel_budget: PixelBudget = field(repr=False)  # pixels decoded at once (provenance/media/budget.py)
    jobs: JobService
    reproduction: ReproduceParts = field(repr=False)  # what `provenance reproduce` needs
    nft: NftService
    models: ModelRegistry  # signed, registered models (provenance/lineage/models.py)

    @classmethod
    def open(cls, settings: Settings, *, start_worker: bool = True, signing: bool = True) -> Services:
        """Create the data dir, keys and CA, migrate the database, start the chain and worker.

        ``signing=False`` is for commands that only read (verify, key and trust administration): no
        time-stamp authority is started, so nothing they open is left unused.

        If any step fails, what the earlier steps opened (database engine, anvil, time-stamp authority,
        anchor worker, limiter, job queue) is closed again, newest first, before the error propagates:
        a failed start leaves no process, thread or port behind.
        """
        with contextlib.ExitStack() as opened:
            services = cls._open(settings, opened, start_worker=start_worker, signing=signing)
            opened.pop_all()  # from here on Services.close() releases them
        return services

    @classmethod
    def _open(cls, settings: Settings, opened: contextlib.ExitStack, *, start_worker: bool, signing: bool) -> Services:
        """The builders in their order: local files first (a bad one fails before any process starts)."""
        storage = open_storage(settings, opened)
        watermarker = read_watermarker(settings)
        chain = open_chain_parts(settings, storage, opened)
        anchoring = open_anchoring(settings, storage, chain, start_worker=start_worker)
        marks = Marks(watermarker, open_fingerprints(settings, storage.repository))
        tsa = open_time_stamping(settings, opened, signing=signing)  # before the signer: every manifest is stamped
        limits = structure_limits(settings)
        worker = anchoring.worker
        certifier = open_certifier(settings, storage, marks, tsa.url, worker.wake if worker else None, limits)
        verifier = open_verifier(settings, storage, chain.chain, marks, limits)
        opened.callback(verifier.close)
        certifier.identifier = verifier  # certify looks an upload up as verify does (no laundering)
        watermarker.legacy = storage.repository.has_legacy_marks()  # marks made before keyed layouts still read
        if worker is not None:
            worker.start()
            opened.callback(worker.stop)
        access = open_access(settings, storage.sessions, opened)
        jobs = open_jobs(settings, storage.sessions, certifier.certify, opened, start_worker=start_worker)
        sizes = (settings.max_upload_bytes, settings.max_pixels)
        reproduction = ReproduceParts(storage.repository, storage.store, jobs.runner, watermarker, *sizes, limits)
        return cls(
            settings=settings,
            engine=storage.engine,
            sessions=storage.sessions,
            repository=storage.repository,
            keys=storage.keys,
            credentials=storage.credentials,
            store=storage.store,
            chain=chain.chain,
            writing=chain.writing,
            anchorer=anchoring.anchorer,
            worker=worker,
            tsa_url=tsa.url,
            close_tsa=tsa.close,
            structure_limits=limits,
            certifier=certifier,
            verifier=verifier,
            accounts=access.accounts,
            admin_account_id=access.admin_account_id,
            limits=access.limits,
            pixel_budget=access.pixel_budget,
            jobs=jobs,
            reproduction=reproduction,
            nft=open_nft(settings, storage, chain.chain),
            models=open_models(settings, storage.sessions, storage.store, storage.keys, chain.chain.registry),
        )

    def close(self) -> None:
        """Release everything ``open`` opened, in this order; a step that raises does not skip the rest."""
        with contextlib.ExitStack() as closing:  # callbacks run last-registered first
            closing.callback(self.engine.dispose)
            closing.callback(self.verifier.close)
            closing.callback(self.chain.close)
            closing.callback(self.writing.close)
            if self.worker is not None:
                closing.callback(self.worker.stop)
            closing.callback(self.limits.limiter.close)
            closing.callback(self.close_tsa)  # after the jobs: a generation finishing during shutdown still signs
            closing.callback(self.jobs.close)
