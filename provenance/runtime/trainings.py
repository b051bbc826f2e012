"""Trainings builder: the LoRA ``TrainingService`` over the opened services (datasets, models, the job queue)."""

from __future__ import annotations

from collections.abc import Callable

from provenance.config import Settings
from provenance.lineage.datasets import DatasetService
from provenance.lineage.models import ModelRegistry
from provenance.lineage.training_jobs import TrainingService
from provenance.runtime.models import open_models
from provenance.runtime.services import Services


def training_service(services: Services) -> TrainingService:
    """The training service of ``services``: it keeps no state of its own (rows in the database, runs on the
    generation queue), so the API and the CLI build it where they need it."""
    settings = services.settings
    models: ModelRegistry | None = getattr(services, "models", None)
    if models is None:
        models = open_models(settings, services.sessions, services.store, services.keys, services.chain.registry)
    return TrainingService(
        services.sessions,
        DatasetService(services.sessions, services.store, services.keys, services.chain.registry),
        models,
        services.jobs.catalog,
        output_dir=settings.resolved_lora_dir / "trained",
        device=settings.generator_device,
        queue=services.jobs.queue,
    )


def open_worker_trainer() -> tuple[TrainingService, Callable[[], None]]:
    """A Celery worker's training service, from the environment's settings (no anchor worker of its own)."""
    services = Services.open(Settings(), start_worker=False)
    return training_service(services), services.close
