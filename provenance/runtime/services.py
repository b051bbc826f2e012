"""Wire the stages together from ``Settings``: one object the API and the CLI both use."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from provenance import media
from provenance.anchoring.anchor import Anchorer, AnchorWorker
from provenance.auth import AccountRepository, Limits, bootstrap_admin, open_limiter
from provenance.certify.certifier import Certifier
from provenance.chain.setup import ChainConnection, open_chain
from provenance.chain.writer import ChainWriting, open_chain_writing
from provenance.config import Settings
from provenance.db.repository import NftRepository, RecordRepository
from provenance.db.session import make_engine, migrate, session_factory
from provenance.errors import ConfigurationError
from provenance.ipfs import ContentStore
from provenance.ipfs.blockstore import LocalBlockstore
from provenance.ipfs.kubo import KuboClient
from provenance.jobs.service import JobService
from provenance.manifests.manifest import ManifestReader, ManifestSigner
from provenance.manifests.pki import C2paCredentials, load_or_create
from provenance.manifests.tsa import open_time_stamp_authority
from provenance.marks.fingerprint import Fingerprinter, FingerprintIndex
from provenance.marks.watermark import Watermarker
from provenance.media.budget import PixelBudget
from provenance.nft.service import NftService
from provenance.signing import KeyStore
from provenance.trust.document import publish_trust
from provenance.verify.verifier import Verifier

log = logging.getLogger(__name__)


def open_jobs(settings: Settings, services: Services, *, start_worker: bool) -> JobService:
    """The generation job service: catalog, runner (generator loaded lazily) and queue backend."""
    from generator.models import ModelCatalog, WeightHasher
    from provenance.jobs.runner import JobRunner
    from provenance.jobs.store import JobRepository

    models_dir = settings.resolved_data_dir / "models"
    catalog = ModelCatalog(
        models_dir,
        aliases=settings.models,
        single_file_configs=settings.single_file_configs,
        allow_hub=settings.allow_hub_downloads,
    )

    def make_generator():  # type: ignore[no-untyped-def]
        from generator.pipeline import Generator

        return Generator(
            catalog,
            device=settings.generator_device,
            compile_unet=settings.compile_unet,
            prompt_privacy=settings.prompt_privacy,
            hasher=WeightHasher(models_dir / "weight-hashes.json"),
        )

    runner = JobRunner(services, make_generator, settings.job_max_attempts)
    queue: Any
    if settings.job_backend == "celery":
        from provenance.jobs.celery_app import CeleryJobQueue

        queue = CeleryJobQueue(settings)
    elif settings.job_backend == "local":
        from provenance.jobs.local import LocalJobQueue

        queue = LocalJobQueue(runner, max_queued=settings.job_queue_size)
    else:
        raise ConfigurationError(f"PROVENANCE_JOB_BACKEND must be 'local' or 'celery', not {settings.job_backend!r}.")
    if start_worker:
        queue.start()
    return JobService(settings, JobRepository(services.sessions), catalog, runner, queue)


def open_store(settings: Settings) -> ContentStore:
    if settings.ipfs_api_url:
        return KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
    return LocalBlockstore(settings.resolved_data_dir / "ipfs")


def _publish_trust(
    chain: ChainConnection, keys: KeyStore, credentials: C2paCredentials, earlier_keys: list[str] | None = None
) -> None:
    """Publish the active signing key and the C2PA anchors on the registry before anything is signed.

    After a dev-chain reset the registry is new: ``earlier_keys`` (every key that signed records) are
    published again too, so the re-anchored records still find their key on chain.
    """
    result = publish_trust(chain, keys.active().key_id, credentials.trust_anchors_pem)
    if chain.admin is not None:
        for key_id in earlier_keys or []:
            chain.admin.ensure_key_published(key_id)
    if not result["sent"] and (result["missing_key"] or result["missing_anchors"]):
        log.warning(
            "The registry owner has not published signing key %s / C2PA anchors %s: verifiers that pin the "
            "registry will call these records untrusted until the owner publishes them (see the README's trust model).",
            result["missing_key"],
            result["missing_anchors"],
        )


def _after_chain_restart(chain: ChainConnection, anchorer: Anchorer) -> None:
    """A restarted dev chain may have lost its last second of blocks: nonces from the node, lost records again."""
    for sender in (chain.registry.sender, chain.deployer):
        if sender is not None:
            sender.resync()
    anchorer.reconcile()


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    repository: RecordRepository
    keys: KeyStore
    credentials: C2paCredentials
    store: ContentStore
    chain: ChainConnection
    anchorer: Anchorer
    worker: AnchorWorker | None
    certifier: Certifier
    verifier: Verifier
    jobs: JobService = field(init=False)
    nft: NftService = field(init=False)
    accounts: AccountRepository = field(init=False)
    admin_account_id: str = field(init=False)  # the account behind <data_dir>/admin.key; the CLI acts as it
    limits: Limits = field(init=False)
    pixel_budget: PixelBudget = field(init=False, repr=False)  # pixels decoded at once (provenance/media/budget.py)
    tsa_url: str | None = field(init=False, default=None)  # RFC 3161 authority the C2PA signer uses
    close_tsa: Callable[[], None] = field(init=False, repr=False, default=lambda: None)
    writing: ChainWriting = field(init=False, repr=False)  # the writer lease (CLI: services.writing.lease)

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
            services = cls._open(settings, start_worker=start_worker, signing=signing, opened=opened)
            opened.pop_all()  # from here on Services.close() releases them
        return services

    @classmethod
    def _open(
        cls, settings: Settings, *, start_worker: bool, signing: bool, opened: contextlib.ExitStack
    ) -> Services:
        data_dir = settings.resolved_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        opened.callback(engine.dispose)
        migrate(engine)
        sessions = session_factory(engine)
        repository = RecordRepository(sessions)
        keys = KeyStore(data_dir / "keys", external_key_file=settings.signing_key_file)
        active = keys.active()
        repository.ensure_key(active.key_id, active.public_key_pem)
        credentials = load_or_create(
            data_dir / "c2pa",
            chain_path=settings.c2pa_cert_chain,
            key_path=settings.c2pa_private_key,
            extra_anchors_path=settings.c2pa_trust_anchors,
        )
        # The mark key is read even with watermarking disabled: verify still reads marks made earlier.
        # Local files first: a bad one fails the start before any process is started.
        watermarker = Watermarker.from_key_file(settings.watermark_key_file or data_dir / "keys" / "watermark.key")
        watermarker.luma = settings.mark_luma
        store = open_store(settings)
        chain = open_chain(settings)
        opened.callback(chain.close)
        # One chain writer per database, one nonce sequence per key across processes (chain/writer.py).
        writing = open_chain_writing(
            engine, data_dir, [chain.registry.sender, chain.deployer, chain.admin.sender if chain.admin else None]
        )
        opened.callback(writing.close)
        if chain.redeployed:
            requeued = repository.requeue_all()
            log.warning("The dev chain was reset; registry redeployed, %d records queued again.", requeued)
        def every_key() -> list[str]:
            return [row.key_id for row, _, _ in repository.signing_keys()]

        _publish_trust(chain, keys, credentials, every_key() if chain.redeployed else None)

        def on_chain_reset() -> None:
            chain.redeploy()
            _publish_trust(chain, keys, credentials, every_key())
            repository.requeue_all()

        anchorer = Anchorer(
            repository,
            chain.registry,
            store=store,
            mode=settings.anchor_mode,
            batch_max_items=settings.batch_max_items,
            batch_max_seconds=settings.batch_max_seconds,
            batch_backlog=settings.anchor_batch_backlog,
            confirmations=settings.confirmations,
            replace_after_s=settings.tx_replace_after_s,
            on_chain_reset=on_chain_reset if chain.node is not None else None,
            single_per_account_per_min=settings.anchor_single_per_account_per_min,
            exempt_account=AccountRepository(sessions).is_admin_account,
        )
        if chain.node is not None and not chain.redeployed:
            # anvil dumps its state every second: a kill can lose the last blocks. Repair from the database.
            anchorer.reconcile()
        if chain.node is not None:
            # The same repair each time the supervisor brings a killed anvil back (see chain/anvil.py).
            chain.node.on_restart = lambda: _after_chain_restart(chain, anchorer)
        worker = (
            AnchorWorker(
                anchorer,
                lease=writing.lease,
                poll_interval_s=settings.anchor_poll_interval_s,
                health_check_s=settings.chain_health_check_s,
                lease_retry_s=settings.writer_retry_s,
            )
            if start_worker
            else None
        )
        # Mirrored patch codes too: a crop that was also flipped is found (the mark confirms every candidate).
        fingerprinter = Fingerprinter(mirror_keypoints=True) if settings.fingerprint_enabled else None
        fingerprint_index = FingerprintIndex() if fingerprinter is not None else None
        if fingerprint_index is not None:
            fingerprint_index.sync(repository)  # every record's fingerprints; later ones are caught up per lookup
        # Before the signer: every manifest is time-stamped (the local TSA for the embedded CA).
        tsa_url, close_tsa = open_time_stamp_authority(settings, data_dir / "c2pa", needed=signing)
        opened.callback(close_tsa)
        certifier = Certifier(
            repository=repository,
            keys=keys,
            manifest_signer=ManifestSigner(credentials, thumbnail=settings.c2pa_thumbnail, tsa_url=tsa_url),
            store=store,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            watermarker=watermarker if settings.watermark_enabled else None,
            fingerprinter=fingerprinter,
            fingerprint_index=fingerprint_index,
            on_recorded=worker.wake if worker else None,
        )
        verifier = Verifier(
            repository=repository,
            manifest_reader=ManifestReader(credentials),
            store=store,
            registry=chain.registry,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            watermarker=watermarker,
            fingerprinter=fingerprinter,
            fingerprint_index=fingerprint_index,
        )
        certifier.identifier = verifier  # certify looks an upload up as verify does (no laundering)
        watermarker.legacy = repository.has_legacy_marks()  # marks made before keyed layouts still read
        if worker is not None:
            worker.start()
            opened.callback(worker.stop)
        services = cls(
            settings,
            engine,
            sessions,
            repository,
            keys,
            credentials,
            store,
            chain,
            anchorer,
            worker,
            certifier,
            verifier,
        )
        services.tsa_url, services.close_tsa = tsa_url, close_tsa
        services.writing = writing
        services.accounts = AccountRepository(sessions)
        services.admin_account_id = bootstrap_admin(services.accounts, data_dir)
        services.limits = Limits(settings, open_limiter(settings))
        opened.callback(services.limits.limiter.close)
        services.pixel_budget = PixelBudget(
            settings.pixel_budget,
            wait_s=settings.pixel_budget_wait_s,
            client_share=settings.pixel_budget_client_share,
            small_reserve=settings.pixel_budget_small_reserve,
        )
        media.STRUCTURE_LIMITS.max_metadata_bytes = settings.max_metadata_bytes
        media.STRUCTURE_LIMITS.max_metadata_chunks = settings.max_metadata_chunks
        services.jobs = open_jobs(settings, services, start_worker=start_worker)
        opened.callback(services.jobs.close)
        services.nft = NftService(
            repository, NftRepository(sessions), store, chain.nft, voucher_ttl_s=settings.voucher_ttl_s
        )
        return services

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
