"""``JobRunner``: the job code every backend runs: generate, then certify every image."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PIL import Image

from provenance.certify import CertifyOptions
from provenance.db.models import JobStatus
from provenance.jobs.store import JobRepository

if TYPE_CHECKING:
    from generator.pipeline import GeneratedImage, GenerationRequest, Generator
    from provenance.services import Services

log = logging.getLogger(__name__)


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    from generator.pipeline import GenerationRequest, LoraSpec

    fields = dict(data)
    fields["loras"] = tuple(LoraSpec(**lora) for lora in fields.get("loras") or ())
    return GenerationRequest(**fields)


def png_bytes(image: GeneratedImage) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image.rgb).save(out, "PNG", compress_level=1)
    return out.getvalue()


class JobRunner:
    """Runs jobs against one ``Generator`` and the certification services."""

    def __init__(self, services: Services, generator_factory: Callable[[], Generator], max_attempts: int) -> None:
        self.services = services
        self.jobs = JobRepository(services.sessions)
        self._generator_factory = generator_factory
        self._generator: Generator | None = None
        self.max_attempts = max_attempts

    @property
    def generator(self) -> Generator:
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
                self.jobs.progress(job_id, step, steps)
                last_write = now

        try:
            images = self.generator.generate(
                request, on_step=report, should_cancel=lambda: self.jobs.status(job_id) == JobStatus.CANCELLED
            )
        except GenerationCancelled:
            return None
        except ModelError as exc:
            self.jobs.finish(job_id, JobStatus.FAILED, error=str(exc))
            return None
        except Exception as exc:
            log.exception("generation job %s failed", job_id)
            self.jobs.finish(job_id, JobStatus.FAILED, error=f"generation failed: {type(exc).__name__}: {exc}")
            return None
        return request, images

    def certify_phase(self, job_id: str, images: list[GeneratedImage]) -> None:
        """Certify every image; the job succeeds when all are recorded."""
        record_ids = []
        job = self.jobs.get(job_id)  # the images belong to the account that submitted the job
        try:
            for image in images:
                certified = self.services.certifier.certify(
                    png_bytes(image),
                    CertifyOptions(
                        source_type="trainedAlgorithmicMedia",
                        filename=f"{job_id}-{image.index}.png",
                        generation=image.provenance,
                        job_id=job_id,
                        account_id=job.account_id if job else None,
                    ),
                )
                record_ids.append(certified.record.id)
        except Exception as exc:
            log.exception("certifying job %s failed", job_id)
            self.jobs.finish(job_id, JobStatus.FAILED, error=f"certification failed: {exc}", record_ids=record_ids)
            return
        self.jobs.finish(job_id, JobStatus.SUCCEEDED, record_ids=record_ids)

    def run(self, job_id: str, on_step: Callable[[int, int], None] | None = None) -> None:
        """Both phases, one after the other (Celery workers, the CLI)."""
        generated = self.generate_phase(job_id, on_step)
        if generated is not None:
            self.certify_phase(job_id, generated[1])
