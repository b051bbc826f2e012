"""Chain builders: the chain connection and writer lease, the trust published at start, the anchorer and worker."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from provenance.anchoring.anchor import Anchorer, AnchorWorker
from provenance.auth import AccountRepository
from provenance.chain.setup import ChainConnection, open_chain
from provenance.chain.writer import ChainWriting, open_chain_writing
from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.lineage.anchoring import LineageAnchorer
from provenance.manifests.pki import C2paCredentials
from provenance.runtime.storage import Storage
from provenance.signing import KeyStore
from provenance.trust.admin import publish_trust

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainParts:
    """The chain connection (registry, NFT, owner's admin, embedded node) and the chain writer lease."""

    chain: ChainConnection
    writing: ChainWriting


@dataclass(frozen=True)
class Anchoring:
    """The anchorer and its background worker (None when the caller asked for no worker; not started yet)."""

    anchorer: Anchorer
    worker: AnchorWorker | None


def publish_startup_trust(
    chain: ChainConnection, keys: KeyStore, credentials: C2paCredentials, earlier_keys: list[str] | None = None
) -> None:
    """Publish the active signing key and the C2PA anchors on the registry before anything is signed.

    After a dev-chain reset the registry is new: ``earlier_keys`` (every key that signed records) are
    published again too, so the re-anchored records still find their key on chain.
    """
    result = publish_trust(chain.admin, chain.registry, keys.active().key_id, credentials.trust_anchors_pem)
    if chain.admin is not None:
        for key_id in earlier_keys or []:
            chain.admin.ensure_key_published(key_id)
    if not result.sent and (result.missing_key or result.missing_anchors):
        log.warning(
            "The registry owner has not published signing key %s / C2PA anchors %s: verifiers that pin the "
            "registry will call these records untrusted until the owner publishes them (see docs/trust-model.md).",
            result.missing_key,
            result.missing_anchors,
        )


def _every_key(repository: RecordRepository) -> list[str]:
    return [row.key_id for row, _, _ in repository.signing_keys()]


def open_chain_parts(settings: Settings, storage: Storage, opened: contextlib.ExitStack) -> ChainParts:
    """Connect to (or start) the chain, take the writer lease's parts, publish the trust root.

    The node and the lease are closed through ``opened`` if a later step fails. After a dev-chain
    reset every record is queued again and every key that signed one is published again.
    """
    chain = open_chain(settings)
    opened.callback(chain.close)
    # One chain writer per database, one nonce sequence per key across processes (chain/writer.py).
    senders = [chain.registry.sender, chain.deployer, chain.admin.sender if chain.admin else None]
    writing = open_chain_writing(storage.engine, settings.resolved_data_dir, senders)
    opened.callback(writing.close)
    if chain.redeployed:
        requeued = storage.repository.requeue_all()
        log.warning("The dev chain was reset; registry redeployed, %d records queued again.", requeued)
    earlier = _every_key(storage.repository) if chain.redeployed else None
    publish_startup_trust(chain, storage.keys, storage.credentials, earlier)
    return ChainParts(chain, writing)


def _after_chain_restart(chain: ChainConnection, anchorer: Anchorer, lineage: LineageAnchorer) -> None:
    """A restarted dev chain may have lost its last second of blocks: nonces from the node, lost records again."""
    for sender in (chain.registry.sender, chain.deployer):
        if sender is not None:
            sender.resync()
    anchorer.reconcile()
    lineage.reconcile()


def open_anchoring(settings: Settings, storage: Storage, parts: ChainParts, *, start_worker: bool) -> Anchoring:
    """The anchorer (repaired against the embedded node) and its worker, built but not started."""
    chain, repository = parts.chain, storage.repository

    def on_chain_reset() -> None:
        chain.redeploy()
        publish_startup_trust(chain, storage.keys, storage.credentials, _every_key(repository))
        repository.requeue_all()
        lineage.reconcile()

    anchorer = Anchorer(
        repository,
        chain.registry,
        store=storage.store,
        mode=settings.anchor_mode,
        batch_max_items=settings.batch_max_items,
        batch_max_seconds=settings.batch_max_seconds,
        batch_backlog=settings.anchor_batch_backlog,
        confirmations=settings.confirmations,
        replace_after_s=settings.tx_replace_after_s,
        on_chain_reset=on_chain_reset if chain.node is not None else None,
        single_per_account_per_min=settings.anchor_single_per_account_per_min,
        exempt_account=AccountRepository(storage.sessions).is_admin_account,
    )
    # Dataset roots and model digests are registered after each anchoring pass, under the same lease and sender.
    lineage = LineageAnchorer(storage.sessions, chain.registry, confirmations=settings.confirmations)
    anchorer.followers.append(lineage.run_once)
    if chain.node is not None and not chain.redeployed:
        # anvil dumps its state every second: a kill can lose the last blocks. Repair from the database.
        anchorer.reconcile()
    if chain.node is not None:
        lineage.reconcile()
        # The same repair each time the supervisor brings a killed anvil back (see chain/anvil.py).
        chain.node.on_restart = lambda: _after_chain_restart(chain, anchorer, lineage)
    if not start_worker:
        return Anchoring(anchorer, None)
    worker = AnchorWorker(
        anchorer,
        lease=parts.writing.lease,
        poll_interval_s=settings.anchor_poll_interval_s,
        health_check_s=settings.chain_health_check_s,
        lease_retry_s=settings.writer_retry_s,
    )
    return Anchoring(anchorer, worker)
