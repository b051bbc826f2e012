"""LoRA training as a job: a ``training_runs`` row, queued on the generation job system, with progress and cancel.

``TrainingService.submit`` checks the request (parameters, dataset, base model, output) and writes a queued row;
the run goes to the generation queue: the local backend's worker thread runs it between two generation jobs (one
device, one job at a time), the Celery backend sends ``provenance.train`` to the same broker queue
(``training_celery.py`` is the worker's task). ``run`` re-verifies the dataset's files before the first step
(``DatasetService.training_items``: a changed dataset is refused naming its files), loads the base pipeline
afresh (the generator's cached one is never modified), trains (``training.train_lora``), writes the LoRA with its
lineage metadata, and registers it (``ModelRegistry.register(kind="lora")``; ``LineageAnchorer`` puts its digest
on chain). A cancel is read before every step; a failed or cancelled run leaves no file.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from provenance.db.models import JobStatus, TrainingRun, utcnow
from provenance.errors import JobFinishedError, NotFoundError, ProvenanceError
from provenance.lineage.training import (
    Lineage,
    TrainingCancelled,
    TrainingParams,
    TrainingRequestError,
    check_output,
    library_versions,
    loss_file,
    train_lora,
)

if TYPE_CHECKING:
    from generator.models import ModelCatalog, ModelSource
    from provenance.lineage.datasets import DatasetService
    from provenance.lineage.models import ModelRegistry

log = logging.getLogger(__name__)
ProgressCallback = Callable[[int, int, float], None]  # (step, steps, loss)


class TrainingQueue(Protocol):
    """What a training run needs of the generation queue: its name, its bound, a way to hand work over."""

    name: str

    def check_capacity(self) -> None:
        """Raise ``QueueFullError`` when nothing can be queued now."""


@dataclass(frozen=True)
class TrainingSpec:
    """What a training request names: the dataset, the base model, the parameters, where the data and output go."""

    dataset_id: str
    base_model: str
    params: TrainingParams
    name: str | None = None
    data: Path | None = None  # the dataset's folder when it was registered without --pin (CLI only)
    output: Path | None = None  # the .safetensors path or folder (CLI); None: <lora_dir>/trained/<id>.safetensors


class TrainingRuns:
    """``training_runs`` rows: the state every process reads and writes (like ``JobRepository`` for generations)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, run: TrainingRun) -> None:
        """Write a new run."""
        with self._sessions.begin() as session:
            session.add(run)

    def get(self, training_id: str) -> TrainingRun | None:
        """The run, or None."""
        with self._sessions() as session:
            return session.get(TrainingRun, training_id)

    def status(self, training_id: str) -> str | None:
        """The run's status (None: no such run)."""
        with self._sessions() as session:
            return session.scalar(select(TrainingRun.status).where(TrainingRun.id == training_id))

    def start(self, training_id: str) -> TrainingRun | None:
        """Move a queued run to running; None when it has finished already (cancelled while queued)."""
        with self._sessions.begin() as session:
            run = session.get(TrainingRun, training_id, with_for_update=True)
            if run is None or run.status in JobStatus.FINISHED:
                return None
            run.status, run.step, run.started_at = JobStatus.RUNNING, 0, utcnow()
            return run

    def update(self, training_id: str, **values: Any) -> bool:
        """Set ``values`` on a run that has not finished (a cancel always wins); whether a row changed."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == training_id, TrainingRun.status.not_in(JobStatus.FINISHED))
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def finish(self, training_id: str, status: str, **values: Any) -> bool:
        """Finish a run unless it was cancelled or finished meanwhile."""
        return self.update(training_id, status=status, finished_at=utcnow(), **values)


def training_source(catalog: ModelCatalog, spec: str) -> ModelSource:
    """The base model to train on: a local folder or checkpoint (a hub id cannot be hashed, so it is refused)."""
    import diffusers
    import transformers

    from generator.models import ModelError

    diffusers.utils.logging.disable_progress_bar()  # the service shows its own progress
    transformers.utils.logging.disable_progress_bar()
    try:
        source = catalog.resolve(spec)
    except ModelError as exc:
        raise TrainingRequestError(str(exc)) from None
    if source.kind == "hub":
        raise TrainingRequestError(f"Base model {spec!r} is a hub id: download it and name the local folder.")
    return source


class TrainingService:
    """Submit, run, read and cancel LoRA training runs (see the module docstring)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        datasets: DatasetService,
        models: ModelRegistry,
        catalog: ModelCatalog,
        *,
        output_dir: Path,
        device: str | None = None,
        queue: Any = None,
    ) -> None:
        self.runs = TrainingRuns(sessions)
        self.datasets = datasets
        self.models = models
        self.catalog = catalog
        self.output_dir = output_dir
        self.device = device
        self.queue = queue

    # --- requests ---------------------------------------------------------------------------
    def _check_dataset(self, spec: TrainingSpec) -> None:
        try:
            items = self.datasets.items(spec.dataset_id)
        except NotFoundError:
            raise TrainingRequestError(f"Unknown dataset {spec.dataset_id[:64]!r}.") from None
        if not items:
            raise TrainingRequestError(f"Dataset {spec.dataset_id} has no images to train on.")
        if spec.data is None and not all(item.cid for item in items):
            raise TrainingRequestError(
                f"Dataset {spec.dataset_id} was registered without --pin, so its files are not stored here: give "
                "its folder (--data FOLDER; over the API, train on datasets registered with --pin)."
            )
        if spec.data is not None and not spec.data.is_dir():
            raise TrainingRequestError(f"{spec.data} is not a folder.")

    def create(self, spec: TrainingSpec, *, account_id: str | None = None) -> TrainingRun:
        """Check the request and write the queued run; nothing is queued yet (``submit`` does, or call ``run``)."""
        params = spec.params.checked()
        self._check_dataset(spec)
        source = training_source(self.catalog, spec.base_model)
        training_id = secrets.token_hex(16)
        output = check_output(spec.output or self.output_dir / f"{training_id}.safetensors")
        run = TrainingRun(
            id=training_id,
            status=JobStatus.QUEUED,
            dataset_id=spec.dataset_id,
            base_model=spec.base_model,
            params={
                **params.to_dict(),
                "versions": library_versions(),
                "name": spec.name or f"lora-{training_id[:8]}",
                "data": str(spec.data.resolve()) if spec.data is not None else None,
                "base_location": source.location,
            },
            step=0,
            steps=params.steps,
            output_path=str(output.resolve()),
            account_id=account_id,
        )
        self.runs.add(run)
        return run

    def submit(self, spec: TrainingSpec, *, account_id: str | None = None) -> TrainingRun:
        """``create``, then hand the run to the job queue (429 ``queue_full`` when it is full)."""
        if self.queue is None:
            raise ProvenanceError("This process has no job queue to run trainings on.")
        self.queue.check_capacity()
        run = self.create(spec, account_id=account_id)
        try:
            enqueue_training(self.queue, self, run.id)
        except Exception:
            self.runs.finish(run.id, JobStatus.FAILED, error="could not be queued")
            raise
        return run

    def get(self, training_id: str) -> TrainingRun:
        """The run; NotFoundError when there is none."""
        run = self.runs.get(training_id)
        if run is None:
            raise NotFoundError(f"No training run {training_id[:64]!r}.")
        return run

    def cancel(self, training_id: str) -> TrainingRun:
        """Cancel a queued or running run (a running one stops before its next step); 409 when it has finished."""
        run = self.get(training_id)
        if not self.runs.finish(training_id, JobStatus.CANCELLED, error="cancelled by request"):
            raise JobFinishedError(f"Training {training_id} has already {run.status}; nothing to cancel.")
        return self.get(training_id)

    # --- running ----------------------------------------------------------------------------
    def run(self, training_id: str, on_step: ProgressCallback | None = None) -> TrainingRun:
        """Run a queued training here; the finished row. Errors finish the row as failed and propagate."""
        run = self.runs.start(training_id)
        if run is None:
            return self.get(training_id)
        try:
            self._train(run, on_step)
        except TrainingCancelled:
            pass  # the row says cancelled already
        except Exception as exc:
            detail = exc.detail if isinstance(exc, ProvenanceError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ProvenanceError):
                log.exception("training %s failed", training_id)
            self.runs.finish(training_id, JobStatus.FAILED, error=detail)
            raise
        return self.get(training_id)

    def _train(self, run: TrainingRun, on_step: ProgressCallback | None) -> None:
        from generator.pipeline import Generator, default_device

        params = TrainingParams(**{k: run.params[k] for k in TrainingParams.__dataclass_fields__})
        data = Path(run.params["data"]) if run.params.get("data") else None
        examples = self.datasets.training_items(run.dataset_id, data)  # re-verified before the first step
        dataset = self.datasets.get(run.dataset_id)
        source = training_source(self.catalog, run.base_model)
        base_digest, _ = self.models.digest_of(Path(source.location))
        base = self.models.match(Path(source.location))
        self.runs.update(run.id, base_digest=base_digest)
        device = self.device or default_device()
        pipe = Generator(self.catalog, device=device).load(run.base_model).pipe  # a fresh copy: the UNet is changed
        lineage = Lineage(base_digest, run.dataset_id, dataset.root, run.id)
        last_write = 0.0

        def report(step: int, steps: int, loss: float) -> None:
            nonlocal last_write
            if on_step is not None:
                on_step(step, steps, loss)
            now = time.monotonic()
            if step == steps or now - last_write > 0.5:  # at most two writes a second
                with contextlib.suppress(Exception):  # progress is best effort
                    self.runs.update(run.id, step=step, steps=steps, loss=loss)
                last_write = now

        output = Path(str(run.output_path))
        result = train_lora(
            pipe, examples, params, output, lineage, device=device, on_step=report,
            should_cancel=lambda: self.runs.status(run.id) == JobStatus.CANCELLED,
        )  # fmt: skip
        try:
            if self.runs.status(run.id) == JobStatus.CANCELLED:  # cancelled after the last step
                raise TrainingCancelled("cancelled after the last step")
            model = self.models.register(
                result.path, name=str(run.params["name"]), kind="lora", base_model_id=base.id if base else None,
                dataset_id=run.dataset_id, training_id=run.id, account_id=run.account_id,
            )  # fmt: skip
        except Exception:
            for path in (result.path, loss_file(result.path)):  # nothing half-done: no unregistered LoRA is left
                path.unlink(missing_ok=True)
            raise
        self.runs.finish(
            run.id, JobStatus.SUCCEEDED, model_id=model.id, loss=result.losses[-1], step=params.steps,
            params={**run.params, "seconds": round(result.seconds, 3), "loss_path": str(result.loss_path)},
        )  # fmt: skip


TRAIN_TASK = "provenance.train"  # the Celery task name (its worker side: training_celery.py)


def enqueue_training(queue: Any, service: TrainingService, training_id: str) -> None:
    """Hand a run to the generation queue: the local worker thread, or the Celery broker's queue."""
    if hasattr(queue, "enqueue_task"):  # the local backend: runs on its one worker thread
        queue.enqueue_task(lambda: _run_logged(service, training_id))
    elif hasattr(queue, "celery"):  # the Celery backend: the same broker queue, the training task
        queue.celery.send_task(TRAIN_TASK, args=[training_id], queue=queue.config.queue)
    else:
        raise ProvenanceError(f"The {getattr(queue, 'name', '?')} job backend cannot run trainings.")


def _run_logged(service: TrainingService, training_id: str) -> None:
    """Run a queued training on a worker thread: its failure is in its row, not the worker's concern."""
    with contextlib.suppress(ProvenanceError):
        service.run(training_id)
