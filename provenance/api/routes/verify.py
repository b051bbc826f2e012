"""Verification: ``POST /v1/verify`` (every check and a verdict) and the difference image it leaves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import Response

from provenance import media
from provenance.api.deps import LimitsDep, PixelBudgetDep, SettingsDep, VerifierDep, read_upload, verify_access
from provenance.api.routes.common import ERRORS
from provenance.api.schemas import ErrorOut, VerifyOut
from provenance.auth import Caller
from provenance.errors import NotFoundError

router = APIRouter(responses=ERRORS)


@router.post(
    "/v1/verify",
    response_model=VerifyOut,
    tags=["verify"],
    dependencies=[Depends(verify_access)],
    responses={
        503: {"model": ErrorOut, "description": "busy: the pixel budget stayed full; see Retry-After"},
        429: {"model": ErrorOut, "description": "the per-minute verify pixel budget is spent; see Retry-After"},
    },
)
def verify(
    request: Request,
    verifier: VerifierDep,
    settings: SettingsDep,
    limits: LimitsDep,
    budget: PixelBudgetDep,
    caller: Annotated[Caller | None, Depends(verify_access)],
    file: Annotated[UploadFile, File(description="The image to check")],
) -> VerifyOut:
    """Report every check (c2pa, exact, watermark, fingerprint, chain, ipfs) and a verdict.

    The upload's pixels (read from its header, before decoding) count against a per-minute budget of the client
    address (``verify_pixels_per_min``) or of a key with the 'verify' scope: 429 with ``Retry-After`` when spent.
    """
    data = read_upload(file, settings.max_upload_bytes)
    _, width, height = media.check_limits(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels, limits=verifier.structure_limits
    )
    client = request.client.host if request.client else "unknown"
    key = f"key:{caller.key_id}" if caller is not None else f"ip:{client}"
    with (
        limits.verify_cost(caller, client, width * height),
        budget.reserve(width * height, client=key),
    ):
        return verifier.verify(data)


@router.get(
    "/v1/verify/{verification_id}/diff.png",
    tags=["verify"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
)
def verify_difference(verification_id: str, verifier: VerifierDep) -> Response:
    """Where a modified upload differs from its certified original, once aligned (red: changed; grey: not covered).

    Kept in memory for the most recent verifications of this instance only.
    """
    png = verifier.difference_image(verification_id)
    if png is None:
        raise NotFoundError(f"No difference image {verification_id!r}: it expired, or another instance served it.")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
