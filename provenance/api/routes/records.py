"""Records: the list (own or all), one record, its certified bytes and its verification bundle."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from provenance.api.deps import BaseUrl, ChainDep, CredentialsDep, CurrentAccount, RecordsDep, StoreDep, VerifierDep
from provenance.api.routes.common import ERRORS, WRITE_ERRORS, record_or_404
from provenance.api.schemas import RecordOut, RecordPage
from provenance.errors import InputError, NotFoundError, PermissionDeniedError
from provenance.lineage.report import LineageReport
from provenance.verify.bundle import build_bundle, bundle_bytes

router = APIRouter(responses=ERRORS)


def _encode_cursor(record: RecordOut) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.record_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    try:
        created, record_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return dt.datetime.fromisoformat(created), str(record_id)
    except (ValueError, TypeError, binascii.Error):
        raise InputError("That cursor is not one this API returned; start again without it.") from None


@router.get("/v1/records", response_model=RecordPage, tags=["records"], responses=WRITE_ERRORS)
def list_records(
    records: RecordsDep,
    base_url: BaseUrl,
    caller: CurrentAccount,
    mine: Annotated[bool, Query(description="Only the records this key's account certified.")] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> RecordPage:
    """Records newest first: ``mine=true`` for the caller's own (any key); every record needs ``admin``."""
    if not mine and not caller.is_admin:
        raise PermissionDeniedError("Listing every record needs the 'admin' scope; use ?mine=true for your own.")
    after = _decode_cursor(cursor) if cursor else None
    # One extra row says whether there is a next page without a count query.
    rows = records.page(caller.account_id if mine else None, limit + 1, after)
    items = [RecordOut.of(r, base_url) for r in rows[:limit]]
    return RecordPage(items=items, next_cursor=_encode_cursor(items[-1]) if len(rows) > limit else None)


@router.get("/v1/records/{record_id}", response_model=RecordOut, tags=["records"])
def get_record(record_id: str, records: RecordsDep, base_url: BaseUrl) -> RecordOut:
    """One record: hashes, CID, signature, watermark, chain status and links."""
    return RecordOut.of(record_or_404(records, record_id), base_url)


@router.get("/v1/records/{record_id}/lineage", response_model=LineageReport, tags=["records"])
def get_record_lineage(record_id: str, records: RecordsDep, verifier: VerifierDep) -> LineageReport:
    """What made a generated record: its base model, LoRAs and their datasets, each link checked now.

    The same report ``POST /v1/verify`` returns as ``lineage``; 404 when the record has no lineage (not generated,
    or generated before lineage was recorded) or the service checks none.
    """
    record = record_or_404(records, record_id)
    report = verifier.lineage.check(record) if verifier.lineage is not None else None
    if report is None:
        raise NotFoundError(f"Record {record_id} has no lineage.")
    return report


@router.get("/v1/records/{record_id}/image", tags=["records"], response_class=Response)
def get_record_image(record_id: str, records: RecordsDep, store: StoreDep) -> Response:
    """The certified bytes, exactly as signed."""
    record = record_or_404(records, record_id)
    return Response(
        store.cat(record.cid),
        media_type=record.media_type,
        headers={"ETag": f'"{record.sha256}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/v1/records/{record_id}/bundle", tags=["records"], response_class=Response)
def get_record_bundle(
    record_id: str, records: RecordsDep, store: StoreDep, credentials: CredentialsDep, chain: ChainDep
) -> Response:
    """Everything a verifier needs without this service (also pinned on IPFS: see ``X-Bundle-Cid``)."""
    record = record_or_404(records, record_id)
    data = bundle_bytes(
        build_bundle(
            record,
            public_key_pem=records.public_key(record.key_id) or "",
            credentials=credentials,
            chain_id=chain.registry.chain_id,
            registry_address=chain.registry.address,
            batch=records.get_batch(record.batch_root) if record.batch_root else None,
        )
    )
    cid = store.add(data).cid
    return Response(
        data, media_type="application/json", headers={"X-Bundle-Cid": cid, "X-Record-Status": record.status}
    )
