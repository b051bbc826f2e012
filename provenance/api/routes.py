"""Routes: parse the request, call one service, shape the answer."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from contextlib import AbstractContextManager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from provenance import __version__, media
from provenance.api import idempotency
from provenance.api.deps import CurrentAccount, ServicesDep, read_upload, require_scope, verify_access
from provenance.api.schemas import (
    AccountOut,
    C2paTrustOut,
    CertifyOut,
    ChainOut,
    ErrorOut,
    GenerationIn,
    HealthOut,
    JobAccepted,
    JobOut,
    JobProgress,
    KeysOut,
    MintIn,
    MintOut,
    RecordOut,
    RecordPage,
    SigningKeyOut,
    VerifyOut,
    VoucherIn,
)
from provenance.auth import CERTIFY_PER_DAY, IMAGES_PER_DAY, MINTS_PER_DAY, Caller
from provenance.certify.certifier import CertifyOptions
from provenance.db.models import GenerationJob
from provenance.errors import InputError, NotFoundError, PermissionDeniedError
from provenance.ipfs.unixfs import cid_from_str
from provenance.verify.bundle import build_bundle, bundle_bytes

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 415, 422, 429, 502)
}
router = APIRouter(responses=ERRORS)
WRITE_ERRORS: dict[int | str, dict[str, object]] = {403: {"model": ErrorOut}, 503: {"model": ErrorOut}}
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        max_length=255,
        description="Makes a retry safe: the same key, account and request within 24 h get the first answer "
        "(no second record or job); the same key with another request is a 422.",
    ),
]


def _within_budget(services: ServicesDep, data: bytes, client: str | None = None) -> AbstractContextManager[int]:
    """Refuse a bad upload from its headers alone, then hold its pixels in the shared budget while it is
    decoded and worked on (waits for room; 503 ``busy`` with ``Retry-After`` when none is made in time).
    ``client`` (an account or address) may hold only its share of the budget at once."""
    settings = services.settings
    _, width, height = media.check_limits(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    return services.pixel_budget.reserve(width * height, client=client)


def _base_url(request: Request, services: ServicesDep) -> str:
    """The prefix of the links in an answer: PROVENANCE_PUBLIC_URL, or "" for relative links. Never the request's
    Host header, which the client chooses (a forged one would otherwise land in stored idempotent answers)."""
    return services.settings.effective_public_url


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
    request: Request,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require_scope("certify"))],
    file: Annotated[UploadFile, File(description="PNG, JPEG or WebP image")],
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
    idempotency_key: IdempotencyKeyHeader = None,
) -> CertifyOut | JSONResponse:
    """Watermark, sign (C2PA + ECDSA), pin and record an image; chain registration follows (scope ``certify``).

    Content that already belongs to another account's record is refused with 409 ``already_certified`` naming
    the record, unless ``derived_from`` declares it. With ``Idempotency-Key``, a retry (same key, account and
    upload within 24 h) gets the first answer back.
    """
    data = read_upload(file, services.settings.max_upload_bytes)
    options = CertifyOptions(
        source_type=source_type or None,
        derived_from=derived_from or None,
        filename=file.filename,
        account_id=caller.account_id,
    )

    def run() -> CertifyOut:
        # The daily quota first: a refused or failed certification is refunded (Limits.quota).
        with (
            services.limits.quota(caller, CERTIFY_PER_DAY),
            _within_budget(services, data, f"account:{caller.account_id}"),
        ):
            certified = services.certifier.certify(data, options)
        return CertifyOut.of(certified.record, _base_url(request, services))

    if idempotency_key is None:
        return run()
    return idempotency.respond(
        services.sessions,
        account_id=caller.account_id,
        endpoint="certify",
        key=idempotency_key,
        digest=idempotency.request_digest(
            hashlib.sha256(data).hexdigest(), source_type or "", derived_from or "", file.filename
        ),
        call=lambda: (201, run().model_dump(mode="json")),
    )


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
    request: Request,
    services: ServicesDep,
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
    rows = services.repository.page(caller.account_id if mine else None, limit + 1, after)
    base = _base_url(request, services)
    items = [RecordOut.of(r, base) for r in rows[:limit]]
    return RecordPage(items=items, next_cursor=_encode_cursor(items[-1]) if len(rows) > limit else None)


@router.get("/v1/account", response_model=AccountOut, tags=["account"])
def account(caller: CurrentAccount, services: ServicesDep) -> AccountOut:
    """The account and key behind the bearer key (check a key works)."""
    rate = services.settings.rate_limit_per_key_per_min if caller.rate_per_min is None else caller.rate_per_min
    return AccountOut(
        account_id=caller.account_id,
        account_name=caller.account_name,
        key_id=caller.key_id,
        scopes=sorted(caller.scopes),
        rate_per_min=rate,
    )


@router.get("/v1/records/{record_id}", response_model=RecordOut, tags=["records"])
def get_record(record_id: str, request: Request, services: ServicesDep) -> RecordOut:
    record = services.repository.get(record_id)
    if record is None:
        raise NotFoundError(f"No record {record_id!r}.")
    return RecordOut.of(record, _base_url(request, services))


@router.get("/v1/records/{record_id}/image", tags=["records"], response_class=Response)
def get_record_image(record_id: str, services: ServicesDep) -> Response:
    """The certified bytes, exactly as signed."""
    record = services.repository.get(record_id)
    if record is None:
        raise NotFoundError(f"No record {record_id!r}.")
    return Response(
        services.store.cat(record.cid),
        media_type=record.media_type,
        headers={"ETag": f'"{record.sha256}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/v1/records/{record_id}/bundle", tags=["records"], response_class=Response)
def get_record_bundle(record_id: str, services: ServicesDep) -> Response:
    """Everything a verifier needs without this service (also pinned on IPFS: see ``X-Bundle-Cid``)."""
    record = services.repository.get(record_id)
    if record is None:
        raise NotFoundError(f"No record {record_id!r}.")
    data = bundle_bytes(
        build_bundle(
            record,
            public_key_pem=services.repository.public_key(record.key_id) or "",
            credentials=services.credentials,
            chain_id=services.chain.registry.chain_id,
            registry_address=services.chain.registry.address,
            batch=services.repository.get_batch(record.batch_root) if record.batch_root else None,
        )
    )
    cid = services.store.add(data).cid
    return Response(
        data, media_type="application/json", headers={"X-Bundle-Cid": cid, "X-Record-Status": record.status}
    )


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
    services: ServicesDep,
    caller: Annotated[Caller | None, Depends(verify_access)],
    file: Annotated[UploadFile, File(description="The image to check")],
) -> VerifyOut:
    """Report every check (c2pa, exact, watermark, fingerprint, chain, ipfs) and a verdict.

    The upload's pixels (read from its header, before decoding) count against a per-minute budget of the client
    address (``verify_pixels_per_min``) or of a key with the 'verify' scope: 429 with ``Retry-After`` when spent.
    """
    data = read_upload(file, services.settings.max_upload_bytes)
    settings = services.settings
    _, width, height = media.check_limits(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    client = request.client.host if request.client else "unknown"
    key = f"key:{caller.key_id}" if caller is not None else f"ip:{client}"
    with (
        services.limits.verify_cost(caller, client, width * height),
        services.pixel_budget.reserve(width * height, client=key),
    ):
        return services.verifier.verify(data)


@router.get(
    "/v1/verify/{verification_id}/diff.png",
    tags=["verify"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
)
def verify_difference(verification_id: str, services: ServicesDep) -> Response:
    """Where a modified upload differs from its certified original, once aligned (red: changed; grey: not covered).

    Kept in memory for the most recent verifications of this instance only.
    """
    png = services.verifier.difference_image(verification_id)
    if png is None:
        raise NotFoundError(f"No difference image {verification_id!r}: it expired, or another instance served it.")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/v1/keys", response_model=KeysOut, tags=["keys"])
def keys(services: ServicesDep) -> KeysOut:
    """Every ECDSA key that signed records (old ones stay after rotation) and the C2PA trust root."""
    active = services.keys.active().key_id
    signing = [
        SigningKeyOut(
            key_id=row.key_id,
            public_key_pem=row.public_key_pem,
            active=row.key_id == active,
            records_signed=count,
            created_at=row.created_at,
            last_used_at=last,
        )
        for row, count, last in services.repository.signing_keys()
    ]
    anchors = services.credentials.trust_anchors_pem.decode() or None
    return KeysOut(
        signing_keys=signing,
        c2pa=C2paTrustOut(root_certificate_pem=anchors, signer_chain_pem=services.credentials.chain_pem.decode()),
    )


@router.get("/v1/chain", response_model=ChainOut, tags=["chain"])
def chain(services: ServicesDep) -> ChainOut:
    registry, nft = services.chain.registry, services.chain.nft
    return ChainOut(
        chain_id=registry.chain_id,
        rpc_url=registry.rpc_url,
        registry_address=registry.address,
        registry_abi=registry.abi,
        nft_address=nft.address if nft else None,
        nft_abi=nft.abi if nft else None,
        anchor_mode=services.settings.anchor_mode,
        confirmations=services.settings.confirmations,
    )


@router.get("/ipfs/{cid}", tags=["ipfs"], response_class=Response)
def ipfs_gateway(cid: str, services: ServicesDep) -> Response:
    """Read-only gateway: the file behind a CID pinned here."""
    try:
        cid_from_str(cid)
    except ValueError:
        raise InputError(f"{cid!r} is not a CIDv1 (base32, starting with 'b').") from None
    if not services.store.has(cid):
        raise NotFoundError(f"{cid} is not pinned here.")
    data = services.store.cat(cid)
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


# The CID of an empty file: asking whether it is pinned exercises the store without writing to it.
_PROBE_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@router.get("/healthz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
def healthz(services: ServicesDep) -> JSONResponse:
    """Each dependency asked in turn; 503 names the ones that do not answer (load balancers read the status)."""
    down: list[str] = []
    chain_state: dict[str, Any]
    try:
        block = services.chain.registry.w3.eth.block_number
        chain_state = {"ok": True, "chain_id": services.chain.registry.chain_id, "block_number": block}
    except Exception as exc:
        down.append("chain")
        chain_state = {"ok": False, "error": f"the chain RPC does not answer: {exc}"}
    records: dict[str, int] = {}
    try:
        records = services.repository.counts()
        database_state: dict[str, Any] = {"ok": True}
    except Exception as exc:
        down.append("database")
        database_state = {"ok": False, "error": f"the database does not answer: {type(exc).__name__}"}
    else:
        try:
            services.repository.probe_write()  # answering reads is not enough: certify writes
        except Exception as exc:
            down.append("database")
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            database_state = {"ok": False, "error": f"the database does not take writes: {reason}"}
    try:
        services.store.has(_PROBE_CID)
        check_writable = getattr(services.store, "check_writable", None)  # the embedded blockstore
        if check_writable is not None:
            check_writable()
        ipfs_state: dict[str, Any] = {"ok": True}
    except Exception as exc:
        down.append("ipfs")
        ipfs_state = {"ok": False, "error": f"the content store does not answer: {exc}"}
    body = HealthOut(
        status="degraded" if down else "ok",
        down=down,
        version=__version__,
        database=services.engine.url.get_backend_name(),
        database_state=database_state,
        chain=chain_state,
        ipfs=services.store.description,
        ipfs_state=ipfs_state,
        records=records,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if down else 200)


def _job_out(job: GenerationJob, request: Request, services: ServicesDep) -> JobOut:
    base = _base_url(request, services)
    records = [r for r in (services.repository.get(rid) for rid in job.record_ids or []) if r is not None]
    return JobOut(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=JobProgress(step=job.step, steps=job.steps),
        attempts=job.attempts,
        records=[CertifyOut.of(r, base) for r in records],
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


@router.post(
    "/v1/generations",
    status_code=202,
    response_model=JobAccepted,
    tags=["generate"],
    responses={429: {"model": ErrorOut}, **WRITE_ERRORS},
)
def create_generation(
    body: GenerationIn,
    request: Request,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require_scope("generate"))],
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobAccepted | JSONResponse:
    """Queue a text-to-image job; every image it makes is certified for the caller's account (scope ``generate``).

    Each image counts against the account's daily quota (``images_per_day``); a refused job counts nothing.
    With ``Idempotency-Key``, a retry (same key, account and body within 24 h) gets the same job, not a new one.
    """

    def run() -> JobAccepted:
        with services.limits.quota(caller, IMAGES_PER_DAY, body.num_images):
            job = services.jobs.submit(body.model_dump(), account_id=caller.account_id)
        return JobAccepted(
            job_id=job.id, status=job.status, status_url=f"{_base_url(request, services)}/v1/generations/{job.id}"
        )

    if idempotency_key is None:
        return run()
    return idempotency.respond(
        services.sessions,
        account_id=caller.account_id,
        endpoint="generations",
        key=idempotency_key,
        digest=idempotency.request_digest(body.model_dump(mode="json")),
        call=lambda: (202, run().model_dump(mode="json")),
    )


@router.get("/v1/generations/{job_id}", response_model=JobOut, tags=["generate"])
def get_generation(job_id: str, request: Request, services: ServicesDep) -> JobOut:
    """A job's state. Public like records: the 128-bit random job id is the capability."""
    return _job_out(services.jobs.get(job_id), request, services)


@router.delete("/v1/generations/{job_id}", response_model=JobOut, tags=["generate"], responses=WRITE_ERRORS)
def cancel_generation(
    job_id: str,
    request: Request,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require_scope("generate"))],
) -> JobOut:
    """Cancel a queued or running job of the caller's account (a running job stops at its next step)."""
    if not caller.may_act_for(services.jobs.get(job_id).account_id):
        raise PermissionDeniedError(f"Job {job_id} belongs to another account.")
    return _job_out(services.jobs.cancel(job_id), request, services)


def _check_record_owner(services: ServicesDep, caller: Caller, record_id: str) -> None:
    """Only the account that certified a record may mint it (admin: any). An unknown record is left
    to the NFT service, which answers 404 (or 422 for a bad address first)."""
    record = services.repository.get(record_id)
    if record is not None and not caller.may_act_for(record.account_id):
        raise PermissionDeniedError(f"Record {record_id} was certified by another account; only it may mint.")


@router.post(
    "/v1/nft/mint",
    status_code=201,
    response_model=MintOut,
    tags=["nft"],
    responses={503: {"model": ErrorOut}, **WRITE_ERRORS},
)
def nft_mint(body: MintIn, services: ServicesDep, caller: Annotated[Caller, Depends(require_scope("mint"))]) -> MintOut:
    """Custodial mint of a registered record to ``to``: one token per content hash (scope ``mint``,
    own records only; counts against ``mints_per_day``)."""
    _check_record_owner(services, caller, body.record_id)
    with services.limits.quota(caller, MINTS_PER_DAY):
        result = services.nft.mint(body.record_id, body.to, account_id=caller.account_id)
    return MintOut(**result.__dict__)


@router.post("/v1/nft/vouchers", status_code=201, tags=["nft"], responses={503: {"model": ErrorOut}, **WRITE_ERRORS})
def nft_voucher(
    body: VoucherIn, services: ServicesDep, caller: Annotated[Caller, Depends(require_scope("mint"))]
) -> dict[str, object]:
    """An EIP-712 lazy-mint voucher: the holder redeems it from their own wallet and pays the gas
    (scope ``mint``, own records only; counts against ``mints_per_day``)."""
    _check_record_owner(services, caller, body.record_id)
    with services.limits.quota(caller, MINTS_PER_DAY):
        return services.nft.voucher(body.record_id, body.to, body.ttl_s, account_id=caller.account_id)
