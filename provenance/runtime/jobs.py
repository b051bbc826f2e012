"""Jobs builder: the generation job service (catalog, runner, queue backend) and what reproducing needs."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from provenance.config import Settings
from provenance.jobs.runner import Certify, JobRunner
from provenance.jobs.service import GenerationLimits, JobQueue, JobService
from provenance.jobs.store import JobRepository
from provenance.runtime.models import model_gates

if TYPE_CHECKING:
    from generator.pipeline import Generator
    from provenance.jobs.celery_app import CeleryConfig


def generation_limits(settings: Settings) -> GenerationLimits:
    """The values ``JobService`` checks requests against, read from the settings."""
    return GenerationLimits(
        max_image_side=settings.max_image_side,
        max_steps=settings.max_steps,
        default_model=settings.default_model,
        lora_dir=settings.resolved_lora_dir,
        prompt_blocklist=tuple(settings.prompt_blocklist),
    )


def celery_config(settings: Settings) -> CeleryConfig:
    """The values the Celery backend uses (broker, queue, visibility timeout, queue bound), read from the settings."""
    from provenance.jobs.celery_app import CeleryConfig  # celery and redis load only where the backend is used

    return CeleryConfig(
        redis_url=settings.redis_url,
        queue=settings.celery_queue,
        visibility_timeout_s=settings.celery_visibility_timeout_s,
        queue_size=settings.job_queue_size,
    )


def open_jobs(
    settings: Settings,
    sessions: sessionmaker[Session],
    certify: Certify,
    opened: contextlib.ExitStack,
    *,
    start_worker: bool,
) -> JobService:
    """The generation job service: catalog, runner (generator loaded lazily) and queue backend.

    The runner gets only ``certify`` and the job table. With ``start_worker`` the local queue starts
    its thread; the service is closed through ``opened`` if a later step fails.
    """
    from generator.models import ModelCatalog, WeightHasher

    request_gate, generator_gate = model_gates(settings, sessions)  # PROVENANCE_REQUIRE_REGISTERED_MODELS
    models_dir = settings.resolved_data_dir / "models"
    catalog = ModelCatalog(
        models_dir,
        aliases=settings.models,
        single_file_configs=settings.single_file_configs,
        allow_hub=settings.allow_hub_downloads,
    )

    def make_generator() -> Generator:
        from generator.pipeline import Generator

        return Generator(
            catalog,
            device=settings.generator_device,
            compile_unet=settings.compile_unet,
            prompt_privacy=settings.prompt_privacy,
            hasher=WeightHasher(models_dir / "weight-hashes.json"),
            model_gate=generator_gate,
        )

    runner = JobRunner(certify, JobRepository(sessions), make_generator, settings.job_max_attempts)
    queue: JobQueue
    if settings.job_backend == "celery":
        from provenance.jobs.celery_app import CeleryJobQueue

        queue = CeleryJobQueue(celery_config(settings))
    else:
        from provenance.jobs.local import LocalJobQueue

        queue = LocalJobQueue(runner, max_queued=settings.job_queue_size)
    if start_worker:
        queue.start()
    jobs = JobService(
        generation_limits(settings), JobRepository(sessions), catalog, runner, queue, model_gate=request_gate
    )
    opened.callback(jobs.close)
    return jobs
