"""``POST /v1/certify``: watermark, sign, pin and record an upload."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse

from provenance.api import idempotency
from provenance.api.deps import (
    BaseUrl,
    CertifierDep,
    IdempotencyDep,
    LimitsDep,
    PixelBudgetDep,
    SettingsDep,
    read_upload,
    require_scope,
)
from provenance.api.routes.common import ERRORS, WRITE_ERRORS, within_budget
from provenance.api.schemas import CertifyOut, ErrorOut
from provenance.auth import CERTIFY_PER_DAY, Caller
from provenance.certify.certifier import CertifyOptions

router = APIRouter(responses=ERRORS)


@router.post(
    "/v1/certify",
    status_code=201,
    response_model=CertifyOut,
    tags=["certify"],
    responses={
        **WRITE_ERRORS,
        409: {"model": ErrorOut, "description": "The content belongs to another account's record."},
    },
)
def certify(
    certifier: CertifierDep,
    settings: SettingsDep,
    limits: LimitsDep,
    budget: PixelBudgetDep,
    base_url: BaseUrl,
    caller: Annotated[Caller, Depends(require_scope("certify"))],
    file: Annotated[UploadFile, File(description="PNG, JPEG or WebP image")],
    idempotent: IdempotencyDep,
    source_type: Annotated[
        str | None,
        Form(
            description="What the image is, as an IPTC digital source type (e.g. digitalCapture, "
            "trainedAlgorithmicMedia, compositeWithTrainedAlgorithmicMedia, algorithmicMedia). The caller's claim, "
            "signed into the manifest; without it the manifest makes no source-type claim."
        ),
    ] = None,
    derived_from: Annotated[
        str | None,
        Form(
            description="Declare the upload a derivative of this record (required when the content belongs to "
            "another account's record); the original becomes its parentOf ingredient and stays its origin."
        ),
    ] = None,
) -> CertifyOut | JSONResponse:
    """Watermark, sign (C2PA + ECDSA), pin and record an image; chain registration follows (scope ``certify``).

    Content that already belongs to another account's record is refused with 409 ``already_certified`` naming
    the record, unless ``derived_from`` declares it. With ``Idempotency-Key``, a retry (same key, account and
    upload within 24 h) gets the first answer back.
    """
    data = read_upload(file, settings.max_upload_bytes)
    options = CertifyOptions(
        source_type=source_type or None,
        derived_from=derived_from or None,
        filename=file.filename,
        account_id=caller.account_id,
    )

    def run() -> CertifyOut:
        # The daily quota first: a refused or failed certification is refunded (Limits.quota).
        with (
            limits.quota(caller, CERTIFY_PER_DAY),
            within_budget(settings, budget, data, f"account:{caller.account_id}"),
        ):
            certified = certifier.certify(data, options)
        return CertifyOut.of(certified.record, base_url)

    return idempotent.run(
        run,
        account_id=caller.account_id,
        endpoint="certify",
        status_code=201,
        digest=lambda: idempotency.request_digest(
            hashlib.sha256(data).hexdigest(), source_type or "", derived_from or "", file.filename
        ),
    )
