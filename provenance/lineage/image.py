"""What made a generated image: its base model, its LoRAs and their training datasets, resolved at generation.

``LineageResolver.resolve`` turns the generator's description (``model.weights_sha256``, each LoRA's
``sha256`` and ``path``) into ``record.generation["lineage"]``:
``{"base": {"model_id", "name", "digest"} | None, "loras": [{"model_id", "name", "digest", "weight",
"dataset_id", "dataset_root", "dataset_manifest_cid"}]}``; ids are null when a file matches no registered
model. ``lineage_ingredients`` turns that into C2PA 2.x ingredients (``c2pa.ingredient.v3``) with the
``inputTo`` relationship and the asset types of the specification's data types: ``c2pa.types.model.pytorch``
for a checkpoint or LoRA (safetensors of PyTorch tensors), ``c2pa.types.dataset`` for a training dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provenance.db.models import Dataset, RegisteredModel
from provenance.lineage.common import dataset_key, model_key

MODEL_DATA_TYPE = "c2pa.types.model.pytorch"
DATASET_DATA_TYPE = "c2pa.types.dataset"
INPUT_TO = "inputTo"
LINEAGE_METADATA_KEY = "org.provenance.lineage"  # our key in each ingredient's assertion metadata


class ModelMatcher(Protocol):
    """Finds the registered model a file is (``provenance.lineage.models.ModelRegistry.match``)."""

    def match(self, path: Path) -> RegisteredModel | None:
        """The registered model whose files are exactly ``path``'s, or None."""
        ...


def weights_digest(weights: dict[str, str]) -> str:
    """A digest for an unregistered base model: its one file's SHA-256, or SHA-256 over the sorted file list."""
    if len(weights) == 1:
        return next(iter(weights.values()))
    listing = json.dumps(sorted(weights.items()), separators=(",", ":")).encode()
    return hashlib.sha256(listing).hexdigest()


def _file_hashes(model: RegisteredModel) -> dict[str, str]:
    return {str(f.get("path")): str(f.get("sha256")) for f in model.files or [] if isinstance(f, dict)}


class LineageResolver:
    """Resolves a generation's model files to registered models and their datasets (reads the database only)."""

    def __init__(self, sessions: sessionmaker[Session], matcher: ModelMatcher | None = None) -> None:
        self._sessions = sessions
        self._matcher = matcher  # the models registry, when wired: matches by file identity (cached)

    def _models(self, kind: str) -> list[RegisteredModel]:
        with self._sessions() as session:
            rows = session.scalars(select(RegisteredModel).where(RegisteredModel.kind == kind)).all()
            session.expunge_all()
            return list(rows)

    def _dataset(self, dataset_id: str | None) -> Dataset | None:
        if dataset_id is None:
            return None
        with self._sessions() as session:
            row = session.get(Dataset, dataset_id)
            if row is not None:
                session.expunge(row)
            return row

    def _base(self, model: dict[str, Any]) -> dict[str, Any] | None:
        weights = model.get("weights_sha256") or {}
        if not isinstance(weights, dict) or not weights:
            return None
        # A registered base model holds every file of the folder; the generator hashed its weight files.
        for row in self._models("base"):
            files = _file_hashes(row)
            if all(files.get(path) == sha for path, sha in weights.items()):
                return {"model_id": row.id, "name": row.name, "digest": row.digest}
        return {"model_id": None, "name": model.get("label") or model.get("id"), "digest": weights_digest(weights)}

    def _lora_row(self, lora: dict[str, Any]) -> RegisteredModel | None:
        path = Path(str(lora.get("path") or ""))
        if self._matcher is not None and path.is_file():
            return self._matcher.match(path)
        for row in self._models("lora"):
            files = list(_file_hashes(row).values())
            if files == [lora.get("sha256")]:
                return row
        return None

    def _lora(self, lora: dict[str, Any]) -> dict[str, Any]:
        row = self._lora_row(lora)
        dataset = self._dataset(row.dataset_id if row is not None else None)
        return {
            "model_id": row.id if row is not None else None,
            "name": row.name if row is not None else lora.get("file"),
            "digest": row.digest if row is not None else lora.get("sha256"),
            "weight": lora.get("weight"),
            "dataset_id": dataset.id if dataset is not None else None,
            "dataset_root": dataset.root if dataset is not None else None,
            "dataset_manifest_cid": dataset.manifest_cid if dataset is not None else None,
        }

    def resolve(self, generation: dict[str, Any]) -> dict[str, Any]:
        """``record.generation["lineage"]`` for the generator's description of one image."""
        model = generation.get("model") or {}
        loras = generation.get("loras") or []
        return {
            "base": self._base(model) if isinstance(model, dict) else None,
            "loras": [self._lora(lora) for lora in loras if isinstance(lora, dict)],
        }


def _model_ingredient(entry: dict[str, Any], kind: str, label: str) -> dict[str, Any]:
    digest = entry.get("digest")
    registered = entry.get("model_id") is not None
    meta: dict[str, Any] = {"kind": kind, "model_id": entry.get("model_id"), "digest": digest}
    if kind == "lora":
        meta["weight"] = entry.get("weight")
    if registered and digest:
        meta["registry_key"] = "0x" + model_key(digest)
    what = "Base model" if kind == "base" else f"LoRA adapter (weight {entry.get('weight')})"
    state = f"registered model {entry['model_id']}" if registered else "not a registered model"
    return {
        "title": str(entry.get("name") or kind),
        "format": "application/octet-stream",
        "relationship": INPUT_TO,
        "label": label,
        "instance_id": f"urn:provenance:model:{digest}",
        "data_types": [{"type": MODEL_DATA_TYPE}],
        "description": f"{what}, SHA-256 digest {digest}, {state}.",
        "metadata": {LINEAGE_METADATA_KEY: meta},
    }


def _dataset_ingredient(lora: dict[str, Any], label: str) -> dict[str, Any]:
    root = str(lora["dataset_root"])
    meta = {
        "kind": "dataset",
        "dataset_id": lora["dataset_id"],
        "root": root,
        "manifest_cid": lora.get("dataset_manifest_cid"),
        "registry_key": "0x" + dataset_key(root),
        "trained": lora.get("model_id"),
    }
    return {
        "title": f"dataset {lora['dataset_id']}",
        "format": "application/octet-stream",
        "relationship": INPUT_TO,
        "label": label,
        "instance_id": f"urn:provenance:dataset:{root}",
        "data_types": [{"type": DATASET_DATA_TYPE}],
        "description": f"Training data of the LoRA {lora.get('name')}: Merkle root {root}, "
        f"manifest {lora.get('dataset_manifest_cid')}.",
        "metadata": {LINEAGE_METADATA_KEY: meta},
    }


def lineage_ingredients(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    """The C2PA ingredient definitions (c2pa-python's Builder JSON) for an image's lineage, base model first."""
    ingredients: list[dict[str, Any]] = []
    if lineage.get("base"):
        ingredients.append(_model_ingredient(lineage["base"], "base", "lineage-base"))
    seen: set[str] = set()
    for i, lora in enumerate(lineage.get("loras") or []):
        ingredients.append(_model_ingredient(lora, "lora", f"lineage-lora-{i}"))
        if lora.get("dataset_id") and lora.get("dataset_root") and lora["dataset_id"] not in seen:
            seen.add(lora["dataset_id"])
            ingredients.append(_dataset_ingredient(lora, f"lineage-dataset-{i}"))
    return ingredients
