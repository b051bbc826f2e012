"""Storage builder: data dir, database (migrated), records, signing keys, C2PA credentials, content store."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.db.session import make_engine, migrate, session_factory
from provenance.ipfs import ContentStore
from provenance.ipfs.blockstore import LocalBlockstore
from provenance.ipfs.kubo import KuboClient
from provenance.manifests.pki import C2paCredentials, load_or_create
from provenance.signing import KeyStore


@dataclass(frozen=True)
class Storage:
    """What lives on disk or in the database: opened first, read by every other builder."""

    engine: Engine
    sessions: sessionmaker[Session]
    repository: RecordRepository
    keys: KeyStore
    credentials: C2paCredentials
    store: ContentStore


def open_store(settings: Settings) -> ContentStore:
    """The content store: a Kubo node when IPFS_API_URL is set, else the embedded blockstore in the data dir."""
    if settings.ipfs_api_url:
        return KuboClient(settings.ipfs_api_url, timeout_s=settings.ipfs_timeout_s)
    return LocalBlockstore(settings.resolved_data_dir / "ipfs")


def open_storage(settings: Settings, opened: contextlib.ExitStack) -> Storage:
    """Create the data dir, migrate the database, load (or create) the signing key and the C2PA CA.

    Local files only, no process started: a bad key or certificate fails the start before the chain.
    The engine is disposed through ``opened`` if a later step fails.
    """
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
    return Storage(engine, sessions, repository, keys, credentials, open_store(settings))
