"""``GET /ipfs/{cid}``: a read-only gateway to what is pinned here."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from provenance import media
from provenance.api.deps import StoreDep
from provenance.api.routes.common import ERRORS
from provenance.errors import InputError, NotFoundError
from provenance.ipfs.unixfs import cid_from_str

router = APIRouter(responses=ERRORS)


@router.get("/ipfs/{cid}", tags=["ipfs"], response_class=Response)
def ipfs_gateway(cid: str, store: StoreDep) -> Response:
    """Read-only gateway: the file behind a CID pinned here."""
    try:
        cid_from_str(cid)
    except ValueError:
        raise InputError(f"{cid!r} is not a CIDv1 (base32, starting with 'b').") from None
    if not store.has(cid):
        raise NotFoundError(f"{cid} is not pinned here.")
    data = store.cat(cid)
    fmt = media.sniff_format(data)
    return Response(
        data,
        media_type=media.FORMATS.get(fmt or "", "application/octet-stream"),
        headers={
            "Cache-Control": "public, max-age=31536000, immutable",
            "X-Ipfs-Path": f"/ipfs/{cid}",
            "ETag": f'"{cid}"',
        },
    )
