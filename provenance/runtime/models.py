"""Models builder: the registry of signed models, and the checks generation runs under
PROVENANCE_REQUIRE_REGISTERED_MODELS (one for requests, one for the generator in whichever process loads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from provenance.chain import ChainReader
from provenance.config import Settings
from provenance.errors import UnregisteredModelError
from provenance.ipfs import ContentStore
from provenance.lineage.model_files import ModelSigner, service_public_keys
from provenance.lineage.models import ModelMatcher, ModelRegistry
from provenance.signing import KeyStore


def model_signer(settings: Settings, keys: KeyStore) -> ModelSigner:
    """Signs with the service's active ECDSA P-256 key file (model-signing reads the key from a PEM file)."""

    def key_file() -> Path:
        if settings.signing_key_file is not None:
            return settings.signing_key_file
        return keys.directory / f"{keys.active().key_id}.pem"

    return ModelSigner(key_file, lambda: service_public_keys(keys.directory, settings.signing_key_file))


def open_models(
    settings: Settings, sessions: sessionmaker[Session], store: ContentStore, keys: KeyStore, registry: ChainReader
) -> ModelRegistry:
    """The model registry: signs with the service's key, stores bundles in the content store, reads the chain."""
    return ModelRegistry(sessions, store, model_signer(settings, keys), registry)


def model_gates(
    settings: Settings, sessions: sessionmaker[Session]
) -> tuple[Callable[[Path], object] | None, Callable[[Path], object] | None]:
    """``(request gate, generator gate)`` when PROVENANCE_REQUIRE_REGISTERED_MODELS is on, else ``(None, None)``.

    The request gate raises ``UnregisteredModelError`` (422 before the job is queued); the generator's
    raises the generator's own ``ModelError`` (the job fails with the same message), so ``generator/``
    needs nothing from this package.
    """
    if not settings.require_registered_models:
        return None, None
    matcher = ModelMatcher(sessions)

    def generator_gate(path: Path) -> object:
        from generator.models import ModelError

        try:
            return matcher.require(path)
        except UnregisteredModelError as exc:
            raise ModelError(exc.detail) from None

    return matcher.require, generator_gate
