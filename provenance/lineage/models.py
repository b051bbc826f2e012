"""Registered, signed models: base checkpoints and LoRAs hashed, signed with ``model-signing``, stored and
registered on chain, and the check generation runs before it loads one.

``ModelRegistry.register`` hashes a model (``model_files``: the digest over the sorted (relative path,
SHA-256) list), signs it with the service's key through ``model-signing``, stores the signature bundle
by CID and writes the ``RegisteredModel`` row *pending* under ``registry_key = model_key(digest)``; the
lineage anchorer (``provenance.lineage.anchoring.LineageAnchorer``) registers pending rows on chain.
``verify`` checks the signature with model-signing's own verifier, the registration on chain, and names
the files that changed. ``match``/``require`` are what generation uses: cached by file identity.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provenance.chain import ChainReader
from provenance.db.models import RecordStatus, RegisteredModel
from provenance.errors import ChainError, InputError, NotFoundError, UnregisteredModelError
from provenance.ipfs import ContentStore
from provenance.lineage.common import Creator, check_shares, model_key
from provenance.lineage.model_files import (
    DigestCache,
    ModelSigner,
    NotAModelError,
    changed_files,
    digest_of,
    model_paths,
)

MODEL_KINDS = ("base", "lora")


@dataclass(frozen=True)
class ModelVerification:
    """``verify``'s answer: the model it matched (by digest, or else the closest by its files), each check."""

    path: str
    digest: str
    model_id: str | None
    name: str | None
    kind: str | None
    signature_valid: bool
    signature_detail: str
    registered: bool  # the model's registry key is registered on chain
    chain_detail: str
    changed: list[str] = field(default_factory=list)  # files added, removed or changed since registration

    @property
    def ok(self) -> bool:
        """Signature valid, registered on chain, and no file changed."""
        return self.signature_valid and self.registered and not self.changed and self.model_id is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (CLI ``--json``, API)."""
        return {
            "ok": self.ok,
            "path": self.path,
            "digest": self.digest,
            "model_id": self.model_id,
            "name": self.name,
            "kind": self.kind,
            "signature": {"valid": self.signature_valid, "detail": self.signature_detail},
            "chain": {"registered": self.registered, "detail": self.chain_detail},
            "changed": self.changed,
        }


def _architecture(path: Path) -> str | None:
    """A short description of what the model is: a diffusers folder's pipeline class, or the file type."""
    import json

    if path.is_dir():
        try:
            index = json.loads((path / "model_index.json").read_text())
            return str(index.get("_class_name"))[:128] if isinstance(index, dict) else None
        except (OSError, ValueError):
            return None
    return path.suffix.lower().lstrip(".") or None


class ModelMatcher:
    """What generation checks before it loads a model or LoRA: only the database and the files, no keys.

    Digests are cached by file identity (path, size, mtime_ns, inode of every file): once a model was
    hashed, matching it again costs a ``stat`` per file and one indexed query, nothing per image.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.cache = DigestCache()

    def by_digest(self, digest: str) -> RegisteredModel | None:
        """The registered model with this digest, if any."""
        with self.sessions() as session:
            return session.scalars(select(RegisteredModel).where(RegisteredModel.digest == digest)).first()

    def match(self, path: Path) -> RegisteredModel | None:
        """The registered, signed model whose files ``path`` has (not one the chain refused), if any.

        A row counts from its registration on: it is signed and stored at once, and the lineage anchorer
        registers it on chain within a pass (``ModelRegistry.verify`` checks the chain).
        """
        row = self.by_digest(self.cache.digest(Path(path)))
        if row is None or row.status == RecordStatus.FAILED or not row.signature:
            return None
        return row

    def require(self, path: Path) -> RegisteredModel:
        """``match``, or UnregisteredModelError naming the file (or folder)."""
        path = Path(path)
        try:
            row = self.match(path)
        except NotAModelError:
            row = None
        if row is None:
            raise UnregisteredModelError(
                f"Model {path.name!r} matches no registered, signed model (PROVENANCE_REQUIRE_REGISTERED_MODELS "
                "is on): register it with `provenance models register`."
            )
        return row


class ModelRegistry:
    """Registers, verifies and matches models (see the module docstring).

    ``registry`` reads the chain (``lookup``); ``None`` where no chain is at hand (verify then says so).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ContentStore,
        signer: ModelSigner,
        registry: ChainReader | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.signer = signer
        self.registry = registry
        self.matcher = ModelMatcher(sessions)

    @staticmethod
    def digest_of(path: Path) -> tuple[str, list[dict[str, Any]]]:
        """``(digest hex, files)`` of the model at ``path`` (``model_files.digest_of``)."""
        return digest_of(Path(path))

    def register(
        self,
        path: Path,
        *,
        name: str,
        kind: str,
        creators: Sequence[Creator] = (),
        base_model_id: str | None = None,
        dataset_id: str | None = None,
        training_id: str | None = None,
        account_id: str | None = None,
    ) -> RegisteredModel:
        """Hash, sign, store the signature by CID and write the row pending; the same files again: the same row."""
        path = Path(path)
        if kind not in MODEL_KINDS:
            raise InputError(f"kind must be one of {', '.join(MODEL_KINDS)}, not {kind!r}.")
        name = name.strip()
        if not name or len(name) > 255:
            raise InputError("a model's name is 1 to 255 characters.")
        try:
            shares = check_shares(list(creators))
        except ValueError as exc:
            raise InputError(str(exc)) from None
        digest, files = digest_of(path)
        existing = self.by_digest(digest)
        if existing is not None:
            return existing
        bundle = self.signer.sign(path)
        cid = self.store.add(bundle.encode()).cid
        row = RegisteredModel(
            id=secrets.token_hex(16),
            name=name,
            kind=kind,
            digest=digest,
            files=files,
            signature=bundle,
            signature_cid=cid,
            architecture=_architecture(path),
            base_model_id=base_model_id,
            dataset_id=dataset_id,
            training_id=training_id,
            creators=[c.model_dump() for c in shares],
            account_id=account_id,
            status=RecordStatus.PENDING,
            registry_key=model_key(digest),
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row

    def by_digest(self, digest: str) -> RegisteredModel | None:
        """The registered model with this digest, if any."""
        return self.matcher.by_digest(digest)

    def get(self, model_id: str) -> RegisteredModel:
        """The registered model; NotFoundError when there is none."""
        with self.sessions() as session:
            row = session.get(RegisteredModel, model_id)
        if row is None:
            raise NotFoundError(f"No registered model {model_id!r}.")
        return row

    def list(self, *, kind: str | None = None) -> list[RegisteredModel]:
        """Every registered model, newest first (``kind``: only base models or only LoRAs)."""
        query = select(RegisteredModel).order_by(RegisteredModel.created_at.desc(), RegisteredModel.id)
        if kind is not None:
            query = query.where(RegisteredModel.kind == kind)
        with self.sessions() as session:
            return list(session.scalars(query))

    def match(self, path: Path) -> RegisteredModel | None:
        """``ModelMatcher.match``: the registered, signed model whose files ``path`` has, if any."""
        return self.matcher.match(path)

    def require(self, path: Path) -> RegisteredModel:
        """``ModelMatcher.require``: ``match`` or UnregisteredModelError naming the file."""
        return self.matcher.require(path)

    def _closest(self, files: builtins.list[dict[str, Any]], *, single: bool) -> RegisteredModel | None:
        """The registered model sharing the most files (path and hash) with ``files``: what was probably changed."""
        names = {e["path"] for e in files}
        pairs = {(e["path"], e["sha256"]) for e in files}
        best, score = None, 0
        for row in self.list():
            if (len(row.files) == 1) != single or not names & {e["path"] for e in row.files}:
                continue
            shared = len(pairs & {(e["path"], e["sha256"]) for e in row.files}) + 1
            if shared > score:
                best, score = row, shared
        return best

    def _chain_check(self, row: RegisteredModel) -> tuple[bool, str]:
        """Whether the model's registry key is registered on chain, and what the chain says."""
        if self.registry is None:
            return False, "no chain connection"
        try:
            entry = self.registry.lookup(row.registry_key or model_key(row.digest))
        except ChainError as exc:
            return False, f"chain unavailable: {exc.detail}"
        if not entry.registered:
            return False, f"not registered on chain yet (status {row.status})"
        if row.signature_cid and entry.cid != row.signature_cid:
            return False, f"registered on chain with another CID ({entry.cid}) than the signature's"
        return True, f"registered in block {entry.block_number} by {entry.registrant} (cid {entry.cid})"

    def verify(self, path: Path) -> ModelVerification:
        """Signature (model-signing's verifier), registration on chain, and the files that changed."""
        path = Path(path)
        digest, files = digest_of(path)
        single = path.is_file()
        row = self.by_digest(digest) or self._closest(files, single=single)
        if row is None:
            return ModelVerification(
                str(path), digest, None, None, None, False, "no registered model has these files", False, "-"
            )
        signature = self.signer.verify(path, row.signature)
        registered, chain_detail = self._chain_check(row)
        changed = [] if row.digest == digest else changed_files(row.files, files, single=single)
        return ModelVerification(
            str(path),
            digest,
            row.id,
            row.name,
            row.kind,
            signature.valid,
            signature.detail,
            registered,
            chain_detail,
            changed,
        )


def check_model_path(path: Path) -> None:
    """NotAModelError unless ``path`` is a model file or folder (the CLI's check before opening services)."""
    model_paths(Path(path))
