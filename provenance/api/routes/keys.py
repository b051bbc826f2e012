"""``GET /v1/keys``: every ECDSA key that signed records, and the C2PA trust root."""

from __future__ import annotations

from fastapi import APIRouter

from provenance.api.deps import CredentialsDep, RecordsDep, SigningKeysDep
from provenance.api.routes.common import ERRORS
from provenance.api.schemas import C2paTrustOut, KeysOut, SigningKeyOut

router = APIRouter(responses=ERRORS)


@router.get("/v1/keys", response_model=KeysOut, tags=["keys"])
def keys(signing_keys: SigningKeysDep, records: RecordsDep, credentials: CredentialsDep) -> KeysOut:
    """Every ECDSA key that signed records (old ones stay after rotation) and the C2PA trust root."""
    active = signing_keys.active().key_id
    signing = [
        SigningKeyOut(
            key_id=row.key_id,
            public_key_pem=row.public_key_pem,
            active=row.key_id == active,
            records_signed=count,
            created_at=row.created_at,
            last_used_at=last,
        )
        for row, count, last in records.signing_keys()
    ]
    anchors = credentials.trust_anchors_pem.decode() or None
    return KeysOut(
        signing_keys=signing,
        c2pa=C2paTrustOut(root_certificate_pem=anchors, signer_chain_pem=credentials.chain_pem.decode()),
    )
