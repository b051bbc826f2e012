"""The trust root: the document verifiers pin, and signing-key rotation and revocation (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from provenance.api.deps import ChainDep, CredentialsDep, RecordsDep, SigningKeysDep, require_scope
from provenance.api.schemas import ErrorOut
from provenance.trust.admin import revoke_signing_key, rotate_signing_key
from provenance.trust.document import WELL_KNOWN_PATH, TrustDocument, build_trust_document

router = APIRouter(tags=["trust"])


@router.get(WELL_KNOWN_PATH, response_model=TrustDocument)
def trust_document(
    chain: ChainDep, signing_keys: SigningKeysDep, records: RecordsDep, credentials: CredentialsDep
) -> Response:
    """Chain id, registry and NFT addresses, writers, signing keys with their validity, C2PA anchors.

    Everything the registry lists is here, read from its events and state at ``block_number``:
    entries the service did not publish itself carry ``published_by_service: false`` and are named
    in ``warnings``. Fetch it once and pin its ``chain_id`` and ``registry_address``: every key and
    anchor in it is also checked against that registry when a bundle is verified.
    """
    document = build_trust_document(chain, signing_keys, records, credentials.trust_anchors_pem)
    return Response(document.to_json(), media_type="application/json", headers={"Cache-Control": "public, max-age=60"})


class RotateIn(BaseModel):
    """Options of a key rotation."""

    revoke_previous: bool = Field(default=False, description="Also revoke the key that was active until now.")


class KeyChangeOut(BaseModel):
    """A signing key published (rotation) or revoked, with the transactions and blocks."""

    key_id: str
    published_tx: str | None = None
    valid_from_block: int | None = None
    revoked_tx: str | None = None
    revoked_at_block: int | None = None
    revoked: dict[str, Any] | None = None


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (401, 403, 404, 500)}


@router.post(
    "/v1/keys/rotate",
    response_model=KeyChangeOut,
    responses=ADMIN_ERRORS,
    dependencies=[Depends(require_scope("admin"))],
)
def rotate_key(
    chain: ChainDep, signing_keys: SigningKeysDep, records: RecordsDep, body: RotateIn | None = None
) -> KeyChangeOut:
    """Create a signing key, publish it on the registry, then make it active (scope ``admin``)."""
    rotation = rotate_signing_key(
        chain.admin, signing_keys, records, revoke_previous=bool(body and body.revoke_previous)
    )
    return KeyChangeOut(
        key_id=rotation.key_id,
        published_tx=rotation.published_tx,
        valid_from_block=rotation.valid_from_block,
        revoked=rotation.revoked.model_dump() if rotation.revoked is not None else None,
    )


@router.post(
    "/v1/keys/{key_id}/revoke",
    response_model=KeyChangeOut,
    responses=ADMIN_ERRORS,
    dependencies=[Depends(require_scope("admin"))],
)
def revoke_key(key_id: str, chain: ChainDep, signing_keys: SigningKeysDep, records: RecordsDep) -> KeyChangeOut:
    """Revoke a signing key on the registry (scope ``admin``); the active key must be rotated first."""
    revocation = revoke_signing_key(chain.admin, signing_keys, records, key_id)
    return KeyChangeOut(**revocation.model_dump())
