"""``JobRunner``: the job code every backend runs: generate, then certify every image."""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from generator.request import GenerationRequest
from provenance.certify.certifier import CertifiedImage, CertifyOptions
from provenance.db.models import JobStatus
from provenance.errors import ProvenanceError, dependency_error
from provenance.jobs.store import JobRepository
from provenance.manifests.manifest import GENERATED_SOURCE_TYPE
from provenance.observability import metrics

if TYPE_CHECKING:
    from generator.pipeline import GeneratedImage, Generator

log = logging.getLogger(__name__)
T = TypeVar("T")
# What certifies one generated image: ``Certifier.certify`` in the service.
Certify = Callable[[bytes, CertifyOptions], CertifiedImage]

# Waits between tries when a dependency fails (database or blockstore unwritable, chain node down):
# about a minute in all before the job fails for good.
RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def is_transient(exc: BaseException) -> bool:
    """A fault of a dependency that may pass (503 on the API: storage, chain, a busy server), not a bug or bad input."""
    return dependency_error(exc) is not None or (isinstance(exc, ProvenanceError) and exc.transient)


def with_retries(
    what: str,
    fn: Callable[[], T],
    delays: Sequence[float] = RETRY_DELAYS_S,
    *,
    give_up: Callable[[], bool] | None = None,
) -> T:
    """``fn()``, tried again after each of ``delays`` while it fails transiently; other errors go through.

    One warning when it starts failing and one line when it works again, not one per try.
    """
    for attempt, delay in enumerate((*delays, None)):
        try:
            result = fn()
        except Exception as exc:
            if delay is None or not is_transient(exc) or (give_up is not None and give_up()):
                raise
            if attempt == 0:
                log.warning("%s failed (%s: %s); retrying with backoff", what, type(exc).__name__, exc)
            time.sleep(delay)
            continue
        if attempt:
            log.warning("%s worked again after %d retries", what, attempt)
        return result
    raise AssertionError("unreachable")


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    """The generator's request from a job's stored request (``GenerationRequest.stored``)."""
    return GenerationRequest.model_validate(data)


def png_bytes(image: GeneratedImage) -> bytes:
    """A generated image as PNG bytes (fast compression: certify re-encodes anyway)."""
    out = io.BytesIO()
    Image.fromarray(image.rgb).save(out, "PNG", compress_level=1)
    return out.getvalue()


class JobRunner:
    """Runs jobs against one ``Generator``: their state in ``jobs``, every image certified with ``certify``."""

    def __init__(
        self,
        certify: Certify,
        jobs: JobRepository,
        generator_factory: Callable[[], Generator],
        max_attempts: int,
    ) -> None:
        self.certify = certify
        self.jobs = jobs
        self._generator_factory = generator_factory
        self._generator: Generator | None = None
        self.max_attempts = max_attempts
        self.retry_delays_s: Sequence[float] = RETRY_DELAYS_S

    @property
    def generator(self) -> Generator:
        """The generator, created on first use (diffusers and torch load on the first job)."""
        if self._generator is None:  # diffusers and torch load on the first job, not at start
            self._generator = self._generator_factory()
        return self._generator

    def generate_phase(
        self, job_id: str, on_step: Callable[[int, int], None] | None = None
    ) -> tuple[GenerationRequest, list[GeneratedImage]] | None:
        """Start the job and run the diffusion model. None when the job is skipped or ends here."""
        from generator.models import ModelError
        from generator.pipeline import GenerationCancelled

        job = self.jobs.start(job_id)
        if job is None:
            return None
        if job.attempts > self.max_attempts:
            self.jobs.finish(
                job_id,
                JobStatus.FAILED,
                error=f"a worker stopped {job.attempts - 1} times while running this job; giving up",
            )
            return None
        request = request_from_dict(job.request)
        last_write = 0.0

        def report(step: int, steps: int) -> None:
            nonlocal last_write
            if on_step is not None:
                on_step(step, steps)
            now = time.monotonic()
            if step == steps or now - last_write > 0.1:  # progress writes at most 10 per second
                try:
                    self.jobs.progress(job_id, step, steps)
                except Exception as exc:  # progress is best effort: a database hiccup must not fail the job
                    if not is_transient(exc):
                        raise
                last_write = now

        try:
            images = self.generator.generate(
                request, on_step=report, should_cancel=lambda: self.jobs.status(job_id) == JobStatus.CANCELLED
            )
        except GenerationCancelled:
            return None
        except ModelError as exc:
            self.jobs.finish(job_id, JobStatus.FAILED, error=str(exc))
            metrics.observe_job(job.started_at, "failed")
            return None
        except Exception as exc:
            log.exception("generation job %s failed", job_id)
            metrics.observe_job(job.started_at, "failed")
            self.jobs.finish(job_id, JobStatus.FAILED, error=f"generation failed: {type(exc).__name__}: {exc}")
            return None
        return request, images

    def certify_phase(self, job_id: str, images: list[GeneratedImage]) -> None:
        """Certify every image; the job succeeds when all are recorded."""
        record_ids: list[str] = []
        delays = self.retry_delays_s
        # The images belong to the account that submitted the job.
        job = with_retries(f"reading job {job_id}", lambda: self.jobs.get(job_id), delays)

        def cancelled() -> bool:
            try:
                return self.jobs.status(job_id) == JobStatus.CANCELLED
            except Exception:
                return False

        try:
            for image in images:
                data = png_bytes(image)
                options = CertifyOptions(
                    source_type=GENERATED_SOURCE_TYPE,
                    filename=f"{job_id}-{image.index}.png",
                    generation=image.provenance,
                    job_id=job_id,
                    account_id=job.account_id if job else None,
                )
                # A storage or chain fault that passes within a minute costs a delay, not the job.
                certified = with_retries(
                    f"certifying image {image.index} of job {job_id}",
                    functools.partial(self.certify, data, options),
                    delays,
                    give_up=cancelled,
                )
                record_ids.append(certified.record.id)
        except Exception as exc:
            log.exception("certifying job %s failed", job_id)
            error = f"certification failed: {exc}"
            with_retries(
                f"finishing job {job_id}",
                lambda: self.jobs.finish(job_id, JobStatus.FAILED, error=error, record_ids=record_ids),
                delays,
            )
            metrics.observe_job(job.started_at if job else None, "failed")
            return
        with_retries(
            f"finishing job {job_id}",
            lambda: self.jobs.finish(job_id, JobStatus.SUCCEEDED, record_ids=record_ids),
            delays,
        )
        metrics.observe_job(job.started_at if job else None, "succeeded")

    def run(self, job_id: str, on_step: Callable[[int, int], None] | None = None) -> None:
        """Both phases, one after the other (Celery workers, the CLI)."""
        generated = self.generate_phase(job_id, on_step)
        if generated is not None:
            self.certify_phase(job_id, generated[1])
