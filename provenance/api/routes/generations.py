"""Generation jobs: queue a text-to-image job, read its state, cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from provenance.api import idempotency
from provenance.api.deps import BaseUrl, IdempotencyDep, JobsDep, LimitsDep, RecordsDep, require_scope
from provenance.api.routes.common import ERRORS, WRITE_ERRORS
from provenance.api.schemas import CertifyOut, ErrorOut, GenerationIn, JobAccepted, JobOut, JobProgress
from provenance.auth import IMAGES_PER_DAY, Caller
from provenance.db.models import GenerationJob
from provenance.db.repository import RecordRepository
from provenance.errors import PermissionDeniedError

router = APIRouter(responses=ERRORS)


def _job_out(job: GenerationJob, records: RecordRepository, base_url: str) -> JobOut:
    certified = [r for r in (records.get(rid) for rid in job.record_ids or []) if r is not None]
    return JobOut(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        progress=JobProgress(step=job.step, steps=job.steps),
        attempts=job.attempts,
        records=[CertifyOut.of(r, base_url) for r in certified],
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
    jobs: JobsDep,
    limits: LimitsDep,
    base_url: BaseUrl,
    caller: Annotated[Caller, Depends(require_scope("generate"))],
    idempotent: IdempotencyDep,
) -> JobAccepted | JSONResponse:
    """Queue a text-to-image job; every image it makes is certified for the caller's account (scope ``generate``).

    Each image counts against the account's daily quota (``images_per_day``); a refused job counts nothing.
    With ``Idempotency-Key``, a retry (same key, account and body within 24 h) gets the same job, not a new one.
    """

    def run() -> JobAccepted:
        with limits.quota(caller, IMAGES_PER_DAY, body.num_images):
            job = jobs.submit(body, account_id=caller.account_id)
        return JobAccepted(job_id=job.id, status=job.status, status_url=f"{base_url}/v1/generations/{job.id}")

    return idempotent.run(
        run,
        account_id=caller.account_id,
        endpoint="generations",
        status_code=202,
        digest=lambda: idempotency.request_digest(body.model_dump(mode="json")),
    )


@router.get("/v1/generations/{job_id}", response_model=JobOut, tags=["generate"])
def get_generation(job_id: str, jobs: JobsDep, records: RecordsDep, base_url: BaseUrl) -> JobOut:
    """A job's state. Public like records: the 128-bit random job id is the capability."""
    return _job_out(jobs.get(job_id), records, base_url)


@router.delete("/v1/generations/{job_id}", response_model=JobOut, tags=["generate"], responses=WRITE_ERRORS)
def cancel_generation(
    job_id: str,
    jobs: JobsDep,
    records: RecordsDep,
    base_url: BaseUrl,
    caller: Annotated[Caller, Depends(require_scope("generate"))],
) -> JobOut:
    """Cancel a queued or running job of the caller's account (a running job stops at its next step)."""
    if not caller.may_act_for(jobs.get(job_id).account_id):
        raise PermissionDeniedError(f"Job {job_id} belongs to another account.")
    return _job_out(jobs.cancel(job_id), records, base_url)
