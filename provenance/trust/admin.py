"""The owner's actions on the trust root: publish the signing key and C2PA anchors, rotate and revoke keys.

Each action takes only what it uses (the registry owner's admin client, the key store, the records'
key table) and returns a typed result. Without the owner's key (``admin`` None) the actions that must
send a transaction refuse with a ``ConfigurationError`` that says how to proceed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from provenance.errors import ConfigurationError, InputError, NotFoundError
from provenance.trust.document import certificate_fingerprint, split_certificates

if TYPE_CHECKING:
    from provenance.chain import ChainReader
    from provenance.chain.admin import RegistryAdmin
    from provenance.db.repository import RecordRepository
    from provenance.signing import KeyStore


class TrustPublication(BaseModel):
    """What ``publish_trust`` did: sent the missing entries, or (no owner key) what the owner still has to send."""

    sent: bool = Field(description="True: this service holds the owner key and sent what was missing.")
    published_key: str | None = Field(default=None, description="The signing key published now (sent only).")
    published_anchors: list[str] = Field(default_factory=list, description="Anchor fingerprints published now.")
    missing_key: str | None = Field(default=None, description="The signing key the owner must publish (not sent).")
    missing_anchors: list[str] = Field(default_factory=list, description="Anchors the owner must publish (not sent).")


class KeyRevocation(BaseModel):
    """A signing key revoked on the registry: nothing it signs counts from ``revoked_at_block`` on."""

    key_id: str
    revoked_tx: str
    revoked_at_block: int


class KeyRotation(BaseModel):
    """A new signing key, published on the registry and then made active; the old one revoked if asked."""

    key_id: str
    published_tx: str
    valid_from_block: int
    revoked: KeyRevocation | None = Field(default=None, description="The previous key, when it was revoked too.")


def publish_trust(
    admin: RegistryAdmin | None, registry: ChainReader, key_id: str, anchors_pem: bytes
) -> TrustPublication:
    """Make sure the registry lists the signing key ``key_id`` and the C2PA anchors (owner key needed).

    Returns what was sent. Without an owner key (an external chain whose owner is a cold key or a
    multisig) nothing is sent, and the result says what the owner still has to publish.
    """
    anchors = [certificate_fingerprint(c) for c in split_certificates(anchors_pem)]
    if admin is None:
        return TrustPublication(
            sent=False,
            missing_key=None if registry.key_status(key_id).published else key_id,
            missing_anchors=[fp for fp in anchors if not registry.is_trust_anchor(fp)],
        )
    sent_key = admin.ensure_key_published(key_id)
    sent_anchors = [fp for fp in anchors if admin.ensure_trust_anchor(fp)]
    return TrustPublication(sent=True, published_key=key_id if sent_key else None, published_anchors=sent_anchors)


def _require_admin(admin: RegistryAdmin | None, action: str) -> RegistryAdmin:
    if admin is None:
        raise ConfigurationError(
            f"Cannot {action}: this service has no registry owner key (set CHAIN_OWNER_KEY_FILE, or have the "
            "owner send the transaction; see docs/trust-model.md)."
        )
    return admin


def rotate_signing_key(
    admin: RegistryAdmin | None, keys: KeyStore, repository: RecordRepository, *, revoke_previous: bool = False
) -> KeyRotation:
    """Create a signing key, publish it on the registry, and only then make it active.

    In that order a record is never signed with a key a verifier cannot find on chain. With
    ``revoke_previous`` the old key is revoked from the next block on: records it signed that are
    already registered stay valid, anything registered later with it does not.
    """
    owner = _require_admin(admin, "rotate the signing key")
    previous = keys.active()
    key = keys.create()
    tx_hash, block = owner.publish_key(key.key_id)
    repository.ensure_key(key.key_id, key.public_key_pem)
    keys.activate(key.key_id)
    revoked = revoke_signing_key(owner, keys, repository, previous.key_id) if revoke_previous else None
    return KeyRotation(key_id=key.key_id, published_tx=tx_hash, valid_from_block=block, revoked=revoked)


def revoke_signing_key(
    admin: RegistryAdmin | None, keys: KeyStore, repository: RecordRepository, key_id: str
) -> KeyRevocation:
    """Revoke a key on the registry. The active key cannot be revoked: rotate first."""
    if key_id == keys.active().key_id:
        raise InputError("That is the active signing key: rotate first (`provenance keys rotate --revoke-previous`).")
    if repository.public_key(key_id) is None:
        raise NotFoundError(f"No signing key {key_id!r} is known to this service.")
    owner = _require_admin(admin, "revoke a signing key")
    tx_hash, block = owner.revoke_key(key_id)
    return KeyRevocation(key_id=key_id, revoked_tx=tx_hash, revoked_at_block=block)
