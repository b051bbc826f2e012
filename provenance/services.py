"""Wire the stages together from ``Settings``: one object the API and the CLI both use."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from provenance.anchor import Anchorer, AnchorWorker
from provenance.certify import Certifier
from provenance.chain.setup import ChainConnection, open_chain
from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.db.session import make_engine, migrate, session_factory
from provenance.ipfs import ContentStore
from provenance.ipfs.blockstore import LocalBlockstore
from provenance.ipfs.kubo import KuboClient
from provenance.manifest import ManifestReader, ManifestSigner
from provenance.pki import C2paCredentials, load_or_create
from provenance.signing import KeyStore
from provenance.verify import Verifier

log = logging.getLogger(__name__)


def open_store(settings: Settings) -> ContentStore:
    if settings.ipfs_api_url:
        return KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
    return LocalBlockstore(settings.resolved_data_dir / "ipfs")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    repository: RecordRepository
    keys: KeyStore
    credentials: C2paCredentials
    store: ContentStore
    chain: ChainConnection
    anchorer: Anchorer
    worker: AnchorWorker | None
    certifier: Certifier
    verifier: Verifier

    @classmethod
    def open(cls, settings: Settings, *, start_worker: bool = True) -> Services:
        """Create the data dir, keys and CA, migrate the database, start the chain and worker."""
        data_dir = settings.resolved_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url)
        migrate(engine)
        repository = RecordRepository(session_factory(engine))
        keys = KeyStore(data_dir / "keys", external_key_file=settings.signing_key_file)
        active = keys.active()
        repository.ensure_key(active.key_id, active.public_key_pem)
        credentials = load_or_create(
            data_dir / "c2pa",
            chain_path=settings.c2pa_cert_chain,
            key_path=settings.c2pa_private_key,
            extra_anchors_path=settings.c2pa_trust_anchors,
        )
        store = open_store(settings)
        chain = open_chain(settings)
        if chain.redeployed:
            requeued = repository.requeue_all()
            log.warning("The dev chain was reset; registry redeployed, %d records queued again.", requeued)
        anchorer = Anchorer(repository, chain.registry)
        worker = AnchorWorker(anchorer, poll_interval_s=settings.anchor_poll_interval_s) if start_worker else None
        certifier = Certifier(
            repository=repository,
            keys=keys,
            manifest_signer=ManifestSigner(credentials, thumbnail=settings.c2pa_thumbnail),
            store=store,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
            watermark_enabled=settings.watermark_enabled,
            on_recorded=worker.wake if worker else None,
        )
        verifier = Verifier(
            repository=repository,
            manifest_reader=ManifestReader(credentials),
            store=store,
            registry=chain.registry,
            max_upload_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
        )
        if worker is not None:
            worker.start()
        return cls(settings, engine, repository, keys, credentials, store, chain, anchorer, worker, certifier, verifier)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.chain.close()
        self.engine.dispose()
