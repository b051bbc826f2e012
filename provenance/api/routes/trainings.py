"""LoRA training runs: ``POST /v1/trainings`` (scope ``train``), ``GET /v1/trainings/{id}``, ``POST .../cancel``.

A run trains on a registered dataset whose images are stored here (registered with ``--pin``); API callers never
name server folders. The base model is named as for generations: the built-in tiny model, a name from
``PROVENANCE_MODELS``, or a folder or checkpoint inside the models folder. The LoRA is written to
``<lora_dir>/trained/<id>.safetensors`` (so a generation can name it as ``trained/<id>.safetensors``) and
registered as a signed model.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from provenance.api.deps import BaseUrl, ServicesDep, require_scope
from provenance.api.routes.common import ERRORS, WRITE_ERRORS
from provenance.api.schemas import ErrorOut
from provenance.auth import Caller
from provenance.db.models import TrainingRun
from provenance.errors import PermissionDeniedError
from provenance.lineage.training import MAX_RANK, MAX_STEPS, TrainingParams
from provenance.lineage.training_jobs import TrainingService, TrainingSpec
from provenance.runtime.trainings import training_service

router = APIRouter(responses=ERRORS)


class TrainingIn(BaseModel):
    """A LoRA training request: the dataset, the base model and the hyperparameters."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=64, description="A registered dataset (stored with --pin).")
    base_model: str | None = Field(default=None, max_length=500, description="Base model; default: the default.")
    name: str | None = Field(default=None, max_length=255, description="The registered LoRA's name.")
    rank: int = Field(default=16, description=f"LoRA rank, 1 to {MAX_RANK}.")
    steps: int = Field(default=500, description=f"Optimisation steps, 1 to {MAX_STEPS}.")
    lr: float = Field(default=1e-4, description="AdamW learning rate.")
    resolution: int = Field(default=512, description="Training resolution (square), a multiple of 8.")
    seed: int = Field(default=0, description="Seed of the data order, noise and timesteps.")


class TrainingAccepted(BaseModel):
    """A training run was queued: poll ``status_url``."""

    training_id: str
    status: str
    status_url: str


class TrainingOut(BaseModel):
    """A training run's state, progress, last loss and the registered LoRA it made."""

    training_id: str
    status: str
    dataset_id: str
    base_model: str
    base_digest: str | None
    params: dict[str, object]
    step: int
    steps: int
    loss: float | None
    model_id: str | None = Field(description="The registered LoRA (GET /v1/models/{id}) when it succeeded.")
    lora_file: str | None = Field(description="Its file name inside the LoRA folder, for generations.")
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, run: TrainingRun, lora_dir_name: str | None) -> TrainingOut:
        """The answer for a row (server paths are not shown, only the LoRA's name in the LoRA folder)."""
        public = {k: v for k, v in run.params.items() if k not in ("data", "base_location", "loss_path")}
        return cls(
            training_id=run.id, status=run.status, dataset_id=run.dataset_id, base_model=run.base_model,
            base_digest=run.base_digest, params=public, step=run.step, steps=run.steps, loss=run.loss,
            model_id=run.model_id, lora_file=lora_dir_name, error=run.error, created_at=run.created_at,
            started_at=run.started_at, finished_at=run.finished_at,
        )  # fmt: skip


def _out(run: TrainingRun, service: TrainingService) -> TrainingOut:
    name = None
    if run.output_path and run.model_id:
        from pathlib import Path

        path = Path(run.output_path)
        root = service.output_dir.parent
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    return TrainingOut.of(run, name)


@router.post(
    "/v1/trainings",
    status_code=202,
    response_model=TrainingAccepted,
    tags=["train"],
    responses={429: {"model": ErrorOut}, **WRITE_ERRORS},
)
def create_training(
    body: TrainingIn,
    services: ServicesDep,
    base_url: BaseUrl,
    caller: Annotated[Caller, Depends(require_scope("train"))],
) -> TrainingAccepted:
    """Queue a LoRA training run on a registered (pinned) dataset for the caller's account (scope ``train``)."""
    service = training_service(services)
    params = TrainingParams(rank=body.rank, steps=body.steps, lr=body.lr, resolution=body.resolution, seed=body.seed)
    spec = TrainingSpec(
        dataset_id=body.dataset_id,
        base_model=service_base_model(services, body.base_model),
        params=params,
        name=body.name,
    )
    run = service.submit(spec, account_id=caller.account_id)
    return TrainingAccepted(training_id=run.id, status=run.status, status_url=f"{base_url}/v1/trainings/{run.id}")


def service_base_model(services: ServicesDep, requested: str | None) -> str:
    """The base model an API caller may name: the default, a known name, or a path inside the models folder."""
    from generator.models import TINY_MODEL_ID
    from provenance.lineage.training import TrainingRequestError

    model = requested or services.settings.default_model
    catalog = services.jobs.catalog
    if model == TINY_MODEL_ID or model in catalog.aliases:
        return model
    candidate = (catalog.models_dir / model).resolve()
    if not candidate.is_relative_to(catalog.models_dir.resolve()):
        raise TrainingRequestError(f"base_model {model[:100]!r} must be a name inside the models folder.")
    return str(candidate)


@router.get("/v1/trainings/{training_id}", response_model=TrainingOut, tags=["train"])
def get_training(training_id: str, services: ServicesDep) -> TrainingOut:
    """A run's state and progress. Public like generation jobs: the 128-bit random id is the capability."""
    service = training_service(services)
    return _out(service.get(training_id), service)


@router.post("/v1/trainings/{training_id}/cancel", response_model=TrainingOut, tags=["train"], responses=WRITE_ERRORS)
def cancel_training(
    training_id: str,
    services: ServicesDep,
    caller: Annotated[Caller, Depends(require_scope("train"))],
) -> TrainingOut:
    """Cancel a queued or running run of the caller's account (a running one stops before its next step)."""
    service = training_service(services)
    if not caller.may_act_for(service.get(training_id).account_id):
        raise PermissionDeniedError(f"Training {training_id} belongs to another account.")
    return _out(service.cancel(training_id), service)
