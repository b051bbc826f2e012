"""Where a model comes from, and the fingerprint of every weight file it loads.

A model spec is one of:

- ``tiny-random``: the built-in tiny pipeline (tests, offline default);
- a name from the operator's model table (``PROVENANCE_MODELS``: name -> path or hub id);
- a local diffusers folder (has ``model_index.json``);
- a single-file checkpoint (``.safetensors`` / ``.ckpt``, as model sites distribute them), with a
  local diffusers config folder to describe its components when offline;
- a hub id (``owner/name``), only where the machine is allowed to download.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

TINY_MODEL_ID = "tiny-random"
TINY_LABEL = "tiny-random (testing only)"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(Exception):
    """A model that is unknown, unavailable offline, or cannot be loaded. The message says why."""


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what was asked for, how to load it, and how to label it."""

    id: str
    kind: str  # builtin | folder | single_file | hub
    location: str  # folder or file path, or hub id
    label: str
    config_dir: str | None = None  # single-file only: diffusers configs for its components

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "kind": self.kind, "label": self.label}


@dataclass
class ModelCatalog:
    """Resolves model specs. ``aliases`` maps names to paths or hub ids (with optional config dirs)."""

    models_dir: Path
    aliases: dict[str, str] = field(default_factory=dict)
    single_file_configs: dict[str, str] = field(default_factory=dict)
    allow_hub: bool = False

    def resolve(self, spec: str | None) -> ModelSource:
        spec = (spec or TINY_MODEL_ID).strip()
        if spec == TINY_MODEL_ID:
            from generator.tiny import ensure_tiny_model  # imports diffusers: only when used

            folder = ensure_tiny_model(self.models_dir / TINY_MODEL_ID)
            return ModelSource(TINY_MODEL_ID, "builtin", str(folder), TINY_LABEL)
        target = self.aliases.get(spec, spec)
        path = Path(target).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelError(f"{target} is a folder but not a diffusers pipeline (no model_index.json).")
            return ModelSource(spec, "folder", str(path.resolve()), spec)
        if path.is_file():
            if path.suffix not in (".safetensors", ".ckpt"):
                raise ModelError(f"{target}: single-file checkpoints must be .safetensors or .ckpt.")
            config = self.single_file_configs.get(spec) or self.single_file_configs.get(str(path))
            return ModelSource(spec, "single_file", str(path.resolve()), spec, config_dir=config)
        if HUB_ID.match(target) and not target.startswith((".", "/")):
            if not self.allow_hub:
                raise ModelError(
                    f"Model {spec!r} is a hub id, and this service runs offline. Download it to a local folder "
                    "and name the folder (or add it to PROVENANCE_MODELS)."
                )
            return ModelSource(spec, "hub", target, spec)
        known = ", ".join([TINY_MODEL_ID, *sorted(self.aliases)])
        raise ModelError(f"Unknown model {spec!r}. Known models: {known}; or give a local folder or checkpoint path.")


def sha256_file(path: Path, chunk: int = 8 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class WeightHasher:
    """SHA-256 of weight files, cached by (path, size, mtime): a 7 GB SDXL checkpoint is hashed once."""

    def __init__(self, cache_file: Path) -> None:
        self.cache_file = cache_file
        try:
            self._cache: dict[str, str] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            self._cache = {}

    def hash(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        if key not in self._cache:
            self._cache[key] = sha256_file(path)
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._cache))
            os.replace(tmp, self.cache_file)
        return self._cache[key]

    def weights_of(self, location: Path) -> dict[str, str]:
        """``{relative path: sha256}`` for a weight file or every weight file under a folder."""
        if location.is_file():
            return {location.name: self.hash(location)}
        files = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        return {str(p.relative_to(location)): self.hash(p) for p in files}
