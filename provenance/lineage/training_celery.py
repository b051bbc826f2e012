"""The Celery side of training runs: the ``provenance.train`` task, on the generation workers' app and queue.

Workers run it one task at a time like generations (``--pool=solo``). The runtime installs how a worker process
opens its ``TrainingService`` (``serve_trainer``); it is opened on the first training task and closed with the
worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from celery import signals

from provenance.errors import ConfigurationError, ProvenanceError
from provenance.jobs.celery_app import app
from provenance.lineage.training_jobs import TRAIN_TASK

if TYPE_CHECKING:
    from provenance.lineage.training_jobs import TrainingService

__all__ = ["TRAIN_TASK", "serve_trainer", "train"]
TrainerOpener = Callable[[], "tuple[TrainingService, Callable[[], None]]"]


class _Trainer:
    """This worker process's training service, opened on the first training task."""

    opener: TrainerOpener | None = None
    service: TrainingService | None = None
    close: Callable[[], None] | None = None


def serve_trainer(opener: TrainerOpener) -> None:
    """Set how this worker process opens its ``TrainingService`` (the runtime's wiring)."""
    _Trainer.opener = opener


def _service() -> TrainingService:
    if _Trainer.service is None:
        if _Trainer.opener is None:
            raise ConfigurationError("This Celery app cannot train: start workers with `provenance worker`.")
        _Trainer.service, _Trainer.close = _Trainer.opener()
    return _Trainer.service


@signals.worker_shutdown.connect
def _close(**_: object) -> None:
    close, _Trainer.service, _Trainer.close = _Trainer.close, None, None
    if close is not None:
        close()


@app.task(name=TRAIN_TASK, acks_late=True, reject_on_worker_lost=True)
def train(training_id: str) -> None:
    """The worker's task: run one queued training (its failure is recorded in its row)."""
    with contextlib.suppress(ProvenanceError):
        _service().run(training_id)
