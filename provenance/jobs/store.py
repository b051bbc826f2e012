"""``JobRepository``: generation jobs in the database."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from generator.request import GenerationRequest
from provenance.db.models import GenerationJob, JobStatus, utcnow


class JobRepository:
    """Generation jobs in the database: the state every process reads and writes."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(self, request: GenerationRequest, backend: str, *, account_id: str | None = None) -> GenerationJob:
        """Create a queued job for the resolved request on the backend, owned by account_id."""
        job = GenerationJob(
            id=secrets.token_hex(16),
            status=JobStatus.QUEUED,
            request=request.stored(),
            backend=backend,
            step=0,
            steps=request.steps,
            attempts=0,
            record_ids=[],
            account_id=account_id,
        )
        with self._sessions.begin() as session:
            session.add(job)
        return job

    def get(self, job_id: str) -> GenerationJob | None:
        """The job, or None."""
        with self._sessions() as session:
            return session.get(GenerationJob, job_id)

    def delete(self, job_id: str) -> None:
        """Delete a job (one whose enqueue failed); nothing when it is gone."""
        with self._sessions.begin() as session:
            job = session.get(GenerationJob, job_id)
            if job is not None:
                session.delete(job)

    def status(self, job_id: str) -> str | None:
        """The job's status, or None when there is no such job."""
        with self._sessions() as session:
            return session.scalar(select(GenerationJob.status).where(GenerationJob.id == job_id))

    def start(self, job_id: str) -> GenerationJob | None:
        """Move a queued (or orphaned running) job to running and count the attempt.

        Returns None when the job is finished already (cancelled while queued, or done by
        another worker), so the caller skips it.
        """
        with self._sessions.begin() as session:
            job = session.get(GenerationJob, job_id, with_for_update=True)
            if job is None or job.status in JobStatus.FINISHED:
                return None
            job.status = JobStatus.RUNNING
            job.attempts += 1
            job.step = 0
            job.started_at = utcnow()
            return job

    def progress(self, job_id: str, step: int, steps: int) -> None:
        """Record the diffusion step of a running job."""
        with self._sessions.begin() as session:
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.status == JobStatus.RUNNING)
                .values(step=step, steps=steps)
            )

    def finish(
        self, job_id: str, status: str, *, error: str | None = None, record_ids: list[str] | None = None
    ) -> None:
        """Finish a job unless it was cancelled meanwhile (a cancel always wins)."""
        values: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow()}
        if record_ids is not None:
            values["record_ids"] = record_ids
        with self._sessions.begin() as session:
            session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.status.not_in(JobStatus.FINISHED))
                .values(**values)
            )

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had already finished."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.status.not_in(JobStatus.FINISHED))
                .values(status=JobStatus.CANCELLED, finished_at=utcnow(), error="cancelled by request")
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def unfinished(self, backend: str) -> list[GenerationJob]:
        """Queued and running jobs of a backend, oldest first (picked up again at start)."""
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(GenerationJob)
                    .where(
                        GenerationJob.backend == backend,
                        GenerationJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                    )
                    .order_by(GenerationJob.created_at)
                )
            )
