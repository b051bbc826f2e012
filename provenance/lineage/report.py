"""The lineage section of the verification report: image -> base model / LoRA -> dataset, each link checked.

``LineageChecker.check(record)`` reads ``record.generation["lineage"]`` (written at generation, see
``provenance.lineage.image``) and checks every link on its own: the hash the generator recorded matches the
registered model's files; the model's stored signature (the model-signing sigstore bundle, a DSSE envelope
over an in-toto statement) verifies with one of this service's public keys and names the registered files;
the model's digest and the dataset's Merkle root are registered on chain under their domain-tagged keys
(``provenance.lineage.common``). A link that fails says so, with its reason; the image's own verdict never
depends on it.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provenance.chain import Registry
from provenance.db.models import Dataset, Record, RegisteredModel, SigningKeyRow
from provenance.errors import ProvenanceError
from provenance.lineage.common import dataset_key, model_key

LinkStatus = Literal["verified", "pending", "broken"]
_CURVE_HASH: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class LineageLink(BaseModel):
    """One link of the chain: the image (or a LoRA) to a model or a dataset, with each check on its own."""

    kind: Literal["base", "lora", "dataset"] = Field(description="What the link leads to.")
    parent: str = Field(description='"image", or the LoRA (its model id or name) a dataset trained.')
    name: str | None = Field(default=None, description="The model's or dataset's name (text, never markup).")
    model_id: str | None = Field(default=None, description="The registered model; null when the file matches none.")
    dataset_id: str | None = Field(default=None, description="The registered dataset (dataset links).")
    digest: str | None = Field(default=None, description="The model's digest, or the dataset's Merkle root.")
    weight: float | None = Field(default=None, description="The LoRA's adapter weight in the generation.")
    status: LinkStatus = Field(
        description="verified: every check holds; pending: the chain registration is in "
        "flight; broken: a check fails (see reason)."
    )
    reason: str = Field(description="What the checks found, in one or two sentences.")
    hash_matches: bool | None = Field(default=None, description="The recorded file hashes are the registered ones.")
    signature_valid: bool | None = Field(
        default=None, description="The model's model-signing bundle verifies with this service's key."
    )
    registered_on_chain: bool | None = Field(
        default=None, description="The model digest / dataset root is on the registry (null: chain not read)."
    )
    registry_key: str | None = Field(default=None, description="The registry key looked up (0x hex).")
    block_number: int | None = Field(default=None, description="The block that registered it.")


class LineageReport(BaseModel):
    """What made the image, link by link; it never changes the image's own verdict."""

    status: LinkStatus = Field(description="broken if any link is, pending if any is in flight, else verified.")
    summary: str = Field(description="One sentence on the chain as a whole.")
    links: list[LineageLink] = Field(default_factory=list, description="Base model, LoRAs, then their datasets.")


class LineageChecker:
    """Checks each link of a record's lineage against the database, the stored signatures and the chain."""

    def __init__(self, sessions: sessionmaker[Session], registry: Registry) -> None:
        self._sessions = sessions
        self._registry = registry

    def check(self, record: Record) -> LineageReport | None:
        """The lineage section for ``record``; None when the record was not generated with a lineage."""
        generation = record.generation if isinstance(record.generation, dict) else None
        lineage = generation.get("lineage") if generation else None
        if not isinstance(lineage, dict):
            return None
        links: list[LineageLink] = []
        base = lineage.get("base")
        if isinstance(base, dict):
            weights = (generation or {}).get("model", {}).get("weights_sha256") or {}
            links.append(self._model_link("base", base, dict(weights)))
        recorded = [lora for lora in (generation or {}).get("loras") or [] if isinstance(lora, dict)]
        for i, lora in enumerate(lineage.get("loras") or []):
            if not isinstance(lora, dict):
                continue
            sha = recorded[i].get("sha256") if i < len(recorded) else None
            link = self._model_link("lora", lora, {"*": str(sha)} if sha else {})
            link.weight = lora.get("weight")
            links.append(link)
            if lora.get("dataset_id"):
                links.append(self._dataset_link(lora, parent=str(lora.get("model_id") or lora.get("name"))))
        return _report(links)

    # --- models ----------------------------------------------------------------------------------
    def _model_link(self, kind: Literal["base", "lora"], entry: dict[str, Any], files: dict[str, str]) -> LineageLink:
        link = LineageLink(
            kind=kind,
            parent="image",
            name=_text(entry.get("name")),
            model_id=entry.get("model_id"),
            digest=entry.get("digest"),
            status="broken",
            reason="",
        )
        if link.model_id is None:
            link.hash_matches = False
            link.reason = f"The {_what(kind)} file (SHA-256 {_short(link.digest)}) matches no registered model."
            return link
        with self._sessions() as session:
            row = session.get(RegisteredModel, link.model_id)
            keys = [k.public_key_pem for k in session.scalars(select(SigningKeyRow))]
            if row is not None:
                session.expunge(row)
        if row is None:
            link.reason = f"The registered model {link.model_id} is no longer in this service's database."
            return link
        registered = {str(f.get("path")): str(f.get("sha256")) for f in row.files or [] if isinstance(f, dict)}
        link.hash_matches = row.digest == link.digest and _files_match(files, registered)
        link.signature_valid = _bundle_valid(row.signature, registered, keys)
        self._on_chain(link, model_key(row.digest), row.status)
        return _settle(link, f"{_what(kind)} {row.name}")

    # --- datasets --------------------------------------------------------------------------------
    def _dataset_link(self, lora: dict[str, Any], *, parent: str) -> LineageLink:
        link = LineageLink(
            kind="dataset",
            parent=parent,
            dataset_id=lora.get("dataset_id"),
            digest=lora.get("dataset_root"),
            status="broken",
            reason="",
        )
        with self._sessions() as session:
            row = session.get(Dataset, link.dataset_id)
            if row is not None:
                session.expunge(row)
        if row is None:
            link.reason = f"The dataset {link.dataset_id} is not in this service's database."
            return link
        link.name = _text(row.name)
        link.hash_matches = row.root == link.digest and row.manifest_cid == lora.get("dataset_manifest_cid")
        self._on_chain(link, dataset_key(row.root), row.status)
        return _settle(link, f"dataset {row.name}")

    def _on_chain(self, link: LineageLink, key: str, row_status: str) -> None:
        link.registry_key = "0x" + key
        try:
            entry = self._registry.lookup(key)
        except (ProvenanceError, OSError, ValueError) as exc:
            link.reason = f"The chain cannot be read right now ({type(exc).__name__})."
            return
        link.registered_on_chain = bool(entry.registered)
        link.block_number = entry.block_number if entry.registered else None
        if not entry.registered and row_status in ("pending", "submitted"):
            link.registered_on_chain = None  # in flight, not refused


def _settle(link: LineageLink, what: str) -> LineageLink:
    """Set the link's status and reason from its checks."""
    if link.hash_matches is False:
        link.reason = f"The recorded hashes do not match the registered {what}."
    elif link.signature_valid is False:
        link.reason = f"The signature of the registered {what} does not verify."
    elif link.registered_on_chain is False:
        link.reason = f"The registered {what} is not on the registry."
    elif link.registered_on_chain is None:
        link.status = "pending"
        link.reason = link.reason or f"The registration of the {what} on chain is in flight."
    else:
        link.status = "verified"
        signed = ", its signature verifies," if link.signature_valid else ""  # datasets: no signature checked here
        link.reason = f"The {what} matches its registration{signed} and it is on chain (block {link.block_number})."
    return link


def _report(links: list[LineageLink]) -> LineageReport:
    broken = [link for link in links if link.status == "broken"]
    if broken:
        return LineageReport(
            status="broken",
            summary=f"{len(broken)} of {len(links)} lineage links do not hold: "
            "what made this image cannot be fully shown. The image's own verdict stands.",
            links=links,
        )
    if any(link.status == "pending" for link in links):
        return LineageReport(
            status="pending",
            summary="Every lineage link holds; some registrations on chain are still in flight.",
            links=links,
        )
    return LineageReport(
        status="verified",
        summary="Every lineage link holds: the models and datasets that made "
        "this image are registered, signed and on chain.",
        links=links,
    )


def _files_match(recorded: dict[str, str], registered: dict[str, str]) -> bool:
    """Whether the recorded file hashes are the registered ones (``"*"``: a one-file model, any name)."""
    if not recorded:
        return False
    if set(recorded) == {"*"}:
        return list(registered.values()) == [recorded["*"]]
    return all(registered.get(path) == sha for path, sha in recorded.items())


def _bundle_valid(bundle_json: str, files: dict[str, str], public_keys: list[str]) -> bool:
    """Whether a model-signing (sigstore) bundle's DSSE signature verifies with one of ``public_keys``
    and its in-toto statement names exactly the registered files' SHA-256 hashes."""
    try:
        envelope = json.loads(bundle_json)["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        payload_type = str(envelope["payloadType"]).encode()
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        statement = json.loads(payload)
        resources = statement["predicate"]["resources"]
        named = {str(r["name"]): str(r["digest"]) for r in resources}
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    if sorted(named.values()) != sorted(files.values()):
        return False
    pae = b"DSSEv1 %d %b %d %b" % (len(payload_type), payload_type, len(payload), payload)
    for pem in public_keys:
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            continue
        try:
            key.verify(signature, pae, ec.ECDSA(_CURVE_HASH.get(key.curve.name, hashes.SHA256)()))
            return True
        except InvalidSignature:
            continue
    return False


def _what(kind: str) -> str:
    return "base model" if kind == "base" else "LoRA" if kind == "lora" else kind


def _short(digest: str | None) -> str:
    return f"{digest[:16]}…" if digest else "unknown"


def _text(value: Any) -> str | None:
    return str(value)[:200] if value is not None else None
