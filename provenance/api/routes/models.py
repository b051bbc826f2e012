"""``GET /v1/models``, ``GET /v1/models/{id}``: the signed, registered models (base checkpoints and LoRAs).

Public reads, like ``/v1/keys``. There is no ``POST``: registering names model files on the server, and
API callers never name server paths (the operator registers with ``provenance models register``; a
training job registers the LoRA it made).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from provenance.api.deps import ServicesDep
from provenance.api.routes.common import ERRORS
from provenance.db.models import RegisteredModel

router = APIRouter(responses=ERRORS)


class ModelFileOut(BaseModel):
    """One file of a model: its path inside the folder (a single file: its name), SHA-256 and size."""

    path: str
    sha256: str
    size: int


class CreatorOut(BaseModel):
    """A creator's royalty share, in basis points."""

    address: str
    bps: int
    name: str | None = None


class ModelOut(BaseModel):
    """A registered model: its digest over the files, the model-signing signature's CID, its chain status."""

    model_id: str
    name: str
    kind: str = Field(description="base or lora")
    digest: str = Field(description="SHA-256 over the sorted (relative path, SHA-256) list of its files")
    files: list[ModelFileOut]
    signature_cid: str | None = Field(description="CID of the model-signing sigstore bundle")
    architecture: str | None
    base_model_id: str | None
    dataset_id: str | None
    training_id: str | None
    creators: list[CreatorOut]
    status: str = Field(description="pending, submitted, registered or failed (on chain)")
    registry_key: str | None = Field(description="The bytes32 key registered: model_key(digest)")
    tx_hash: str | None
    block_number: int | None
    created_at: dt.datetime


class ModelsOut(BaseModel):
    """The registered models, newest first."""

    models: list[ModelOut]


def model_out(row: RegisteredModel) -> ModelOut:
    """The API form of a registered model row."""
    values: dict[str, Any] = {
        "model_id": row.id,
        "files": row.files,
        "creators": row.creators or [],
        **{
            name: getattr(row, name)
            for name in (
                "name", "kind", "digest", "signature_cid", "architecture", "base_model_id", "dataset_id",
                "training_id", "status", "registry_key", "tx_hash", "block_number", "created_at",
            )
        },
    }  # fmt: skip
    return ModelOut.model_validate(values)


@router.get("/v1/models", response_model=ModelsOut, tags=["models"])
def list_models(services: ServicesDep, kind: str | None = Query(default=None, pattern="^(base|lora)$")) -> ModelsOut:
    """Every registered model (``kind``: only base models or only LoRAs), newest first."""
    return ModelsOut(models=[model_out(row) for row in services.models.list(kind=kind)])


@router.get("/v1/models/{model_id}", response_model=ModelOut, tags=["models"])
def get_model(model_id: str, services: ServicesDep) -> ModelOut:
    """One registered model; 404 when there is none."""
    return model_out(services.models.get(model_id))
