"""Routes for the trust root: the document verifiers pin, and signing-key rotation (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from provenance.api.deps import ServicesDep, require_scope
from provenance.api.schemas import ErrorOut
from provenance.trust.document import (
    WELL_KNOWN_PATH,
    TrustDocument,
    build_trust_document,
    revoke_signing_key,
    rotate_signing_key,
)

router = APIRouter(tags=["trust"])


@router.get(WELL_KNOWN_PATH, response_model=TrustDocument)
def trust_document(services: ServicesDep) -> Response:
    """Chain id, registry and NFT addresses, writers, signing keys with their validity, C2PA anchors.

    Everything the registry lists is here, read from its events and state at ``block_number``:
    entries the service did not publish itself carry ``published_by_service: false`` and are named
    in ``warnings``. Fetch it once and pin its ``chain_id`` and ``registry_address``: every key and
    anchor in it is also checked against that registry when a bundle is verified.
    """
    document = build_trust_document(services)
    return Response(document.to_json(), media_type="application/json", headers={"Cache-Control": "public, max-age=60"})


class RotateIn(BaseModel):
    revoke_previous: bool = Field(default=False, description="Also revoke the key that was active until now.")


class KeyChangeOut(BaseModel):
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
def rotate_key(services: ServicesDep, body: RotateIn | None = None) -> KeyChangeOut:
    """Create a signing key, publish it on the registry, then make it active (scope ``admin``)."""
    result = rotate_signing_key(services, revoke_previous=bool(body and body.revoke_previous))
    return KeyChangeOut(**result)


@router.post(
    "/v1/keys/{key_id}/revoke",
    response_model=KeyChangeOut,
    responses=ADMIN_ERRORS,
    dependencies=[Depends(require_scope("admin"))],
)
def revoke_key(key_id: str, services: ServicesDep) -> KeyChangeOut:
    """Revoke a signing key on the registry (scope ``admin``); the active key must be rotated first."""
    return KeyChangeOut(**revoke_signing_key(services, key_id))
