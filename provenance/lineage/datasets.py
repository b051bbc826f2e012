"""Datasets: items hashed with their captions, a Merkle root on chain, a signed manifest, membership proofs.

Each image item's leaf value is ``sha256("provenance.dataset-item.v1" || image sha256 || caption sha256 or 32
zero bytes)``; the tree is the batches' OpenZeppelin-compatible ``MerkleTree`` over those values, so a proof
checks with ``MerkleProof.verify`` as a batch's does. The manifest (items, root, name, licence, creators,
time, hygiene report) is signed with the service's ECDSA key (the signature covers the canonical JSON of
everything else), stored by CID, and the root is registered on the registry under ``dataset_key(root)`` with
the manifest's CID by ``LineageAnchorer``. A proof is checked against that registration, read from the chain.
Registration writes the dataset and all its items in one transaction; if anything fails, the stored copies
and manifest it pinned are removed again and no row is left.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from provenance.anchoring.merkle import MerkleTree, verify_proof
from provenance.chain import ChainReader
from provenance.db.models import Dataset, DatasetItem, RecordStatus
from provenance.db.repository import new_record_id
from provenance.errors import InputError, IpfsError, NotFoundError
from provenance.ipfs import ContentStore
from provenance.lineage.common import Creator, check_shares, dataset_key
from provenance.lineage.dataset_items import (
    NEAR_DISTANCE,
    Hygiene,
    ItemInput,
    PreparedItem,
    attach_captions,
    folder_files,
    iscc_distance,
    item_hash,
    prepare,
    read_captions,
)
from provenance.marks.fingerprint_codes import iscc_image_code, iscc_thumbnail
from provenance.signing import KeyStore, verify_signature

MANIFEST_FORMAT = "provenance-dataset/1"
LEAF_RULE = (
    "value = sha256('provenance.dataset-item.v1' || image sha256 || (caption sha256 or 32 zero bytes)); "
    "leaf = keccak256(keccak256(value)); nodes: keccak256 of the two children, smaller first (OpenZeppelin)"
)


class DatasetChangedError(InputError):
    """The dataset's files differ from its registered manifest (named in the message)."""

    code = "dataset_changed"


DatasetChanged = DatasetChangedError  # the name the lineage contract gives it


@dataclass(frozen=True)
class DatasetDiff:
    """How a folder differs from a registered dataset: paths added, removed, changed (bytes or caption)."""

    added: list[str]
    removed: list[str]
    changed: list[str]

    @property
    def identical(self) -> bool:
        """No file added, removed or changed."""
        return not (self.added or self.removed or self.changed)


@dataclass(frozen=True)
class MembershipProof:
    """A dataset item's Merkle proof, and whether it checks against the root registered on chain."""

    dataset_id: str
    path: str
    sha256: str
    caption_sha256: str | None
    item_hash: str  # hex: the leaf value
    proof: list[str]  # 0x-hex siblings, leaf up
    root: str  # 0x-hex
    registry_key: str
    on_chain: bool  # the root's key is registered on the registry
    block_number: int | None
    valid: bool  # the proof takes the item to the root, and that root is on chain

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class NearMatch:
    """A dataset item whose ISCC image code is within ``NEAR_DISTANCE`` bits of a query image's."""

    path: str
    sha256: str
    distance: int


@dataclass(frozen=True)
class TrainingItem:
    """One image of a dataset as a trainer reads it: RGB pixels (stored copy or verified file) and caption."""

    path: str
    rgb: np.ndarray
    caption: str | None


@dataclass
class RegisteredDataset:
    """What registration made: the row (pending on chain), the manifest, the hygiene report."""

    dataset: Dataset
    manifest: dict[str, Any]
    hygiene: Hygiene
    items: list[PreparedItem] = field(repr=False)


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes a manifest signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def verify_manifest(manifest: dict[str, Any], public_key_pem: str | None = None) -> bool:
    """Whether the manifest's signature verifies (with ``public_key_pem``, else the key it names)."""
    signature = manifest.get("signature")
    if not isinstance(signature, dict):
        return False
    body = {k: v for k, v in manifest.items() if k != "signature"}
    pem = public_key_pem or str(signature.get("public_key_pem") or "")
    return verify_signature(pem, canonical(body), str(signature.get("value") or ""))


def _item_entry(item: PreparedItem, cid: str | None) -> dict[str, Any]:
    return {
        "path": item.path,
        "size": item.size,
        "sha256": item.sha256,
        "width": item.width,
        "height": item.height,
        "caption": item.caption,
        "caption_sha256": item.caption_sha256,
        "license": item.license,
        "source": item.source,
        "cid": cid,
        "iscc": item.iscc,
        "item_hash": item.item_hash.hex(),
    }


class DatasetService:
    """Register datasets (folder or upload), read their manifests, verify folders, prove membership."""

    def __init__(
        self, sessions: sessionmaker[Session], store: ContentStore, keys: KeyStore, chain: ChainReader
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.keys = keys
        self.chain = chain

    # --- registration -----------------------------------------------------------------------
    def register_folder(
        self,
        folder: Path,
        *,
        name: str | None = None,
        captions: Path | None = None,
        license: str | None = None,
        creators: Sequence[Creator] = (),
        pin: bool = False,
        account_id: str | None = None,
    ) -> RegisteredDataset:
        """Register the images under ``folder`` (captions from ``captions`` or ``folder/captions.jsonl``)."""
        files = folder_files(folder)
        captions_path = captions if captions is not None else folder / "captions.jsonl"
        if captions is not None and not captions.is_file():
            raise InputError(f"no such captions file: {captions}")
        if captions_path.is_file():
            files = attach_captions(files, read_captions(captions_path))
        return self.register_items(
            files, name=name or folder.resolve().name, license=license, creators=creators, pin=pin,
            account_id=account_id,
        )  # fmt: skip

    def register_items(
        self,
        files: list[ItemInput],
        *,
        name: str,
        license: str | None = None,
        creators: Sequence[Creator] = (),
        pin: bool = True,
        account_id: str | None = None,
    ) -> RegisteredDataset:
        """Register files (already with their captions); the API stores the images always (``pin``)."""
        if not files:
            raise InputError("the dataset is empty: no file to register")
        shares = check_shares(list(creators))
        items, hygiene = prepare(files, store=pin)
        if not items:
            raise InputError(f"the dataset has no image: none of its {len(files)} files decodes as one")
        tree = MerkleTree.build([i.item_hash for i in items])
        root = "0x" + tree.root.hex()
        pinned: list[str] = []  # CIDs this call pinned: removed again if registration fails
        try:
            cids = [self._pin(i.stripped, pinned) if i.stripped is not None else None for i in items]
            manifest = self._manifest(name, license, shares, root, items, cids, hygiene)
            data = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
            manifest_cid = self._pin(data, pinned)
            dataset = Dataset(
                id=new_record_id(), name=name, root=root, item_count=len(items), manifest_cid=manifest_cid,
                manifest_sha256=hashlib.sha256(data).hexdigest(), license=license,
                creators=[c.model_dump() for c in shares], account_id=account_id,
                status=RecordStatus.PENDING, registry_key=dataset_key(root),
            )  # fmt: skip
            rows = [self._row(dataset.id, n, i, cid) for n, (i, cid) in enumerate(zip(items, cids, strict=True))]
            with self.sessions.begin() as session:  # the dataset and all its items, or nothing
                session.add(dataset)
                session.flush()
                session.add_all(rows)
        except BaseException:
            for cid in pinned:
                self.store.remove(cid)
            raise
        return RegisteredDataset(dataset, manifest, hygiene, items)

    def _pin(self, data: bytes, pinned: list[str]) -> str:
        result = self.store.add(data)
        if result.created:
            pinned.append(result.cid)
        return result.cid

    @staticmethod
    def _row(dataset_id: str, position: int, item: PreparedItem, cid: str | None) -> DatasetItem:
        return DatasetItem(
            dataset_id=dataset_id, position=position, path=item.path, size_bytes=item.size, sha256=item.sha256,
            width=item.width, height=item.height, cid=cid, caption=item.caption, caption_sha256=item.caption_sha256,
            license=item.license, source=item.source, iscc=item.iscc,
        )  # fmt: skip

    def _manifest(
        self,
        name: str,
        license: str | None,
        creators: list[Creator],
        root: str,
        items: list[PreparedItem],
        cids: list[str | None],
        hygiene: Hygiene,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "license": license,
            "creators": [c.model_dump() for c in creators],
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "root": root,
            "leaf": LEAF_RULE,
            "item_count": len(items),
            "items": [_item_entry(i, cid) for i, cid in zip(items, cids, strict=True)],
            "hygiene": hygiene.as_dict(),
        }
        key = self.keys.active()
        body["signature"] = {
            "alg": "ECDSA-P256-SHA256",
            "key_id": key.key_id,
            "public_key_pem": key.public_key_pem,
            "value": key.sign(canonical(body)),
            "covers": "canonical JSON (sorted keys, no spaces) of the manifest without 'signature'",
        }
        return body

    # --- reading ----------------------------------------------------------------------------
    def get(self, dataset_id: str) -> Dataset:
        """The dataset's row (``NotFoundError`` for an unknown id)."""
        with self.sessions() as session:
            dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFoundError(f"no dataset {dataset_id[:64]!r}")
        return dataset

    def items(self, dataset_id: str) -> list[DatasetItem]:
        """The dataset's items in leaf-position order."""
        self.get(dataset_id)
        with self.sessions() as session:
            query = select(DatasetItem).where(DatasetItem.dataset_id == dataset_id).order_by(DatasetItem.position)
            return list(session.scalars(query))

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        """The signed manifest, read back from the content store (checked against its recorded hash)."""
        dataset = self.get(dataset_id)
        data = self.store.cat(dataset.manifest_cid)
        if hashlib.sha256(data).hexdigest() != dataset.manifest_sha256:
            raise IpfsError(f"the manifest of dataset {dataset_id} in the store does not match its hash")
        manifest: dict[str, Any] = json.loads(data)
        return manifest

    # --- verification and membership --------------------------------------------------------
    def verify_folder(self, dataset_id: str, folder: Path) -> DatasetDiff:
        """Re-hash ``folder`` (and its ``captions.jsonl``) against the dataset: added, removed, changed files."""
        items = {i.path: i for i in self.items(dataset_id)}
        left_out = {str(e["path"]) for e in self.manifest(dataset_id).get("hygiene", {}).get("not_images", [])}
        files = {f.path: f for f in folder_files(folder)}
        captions = read_captions(folder / "captions.jsonl") if (folder / "captions.jsonl").is_file() else None
        added = sorted(p for p in files if p not in items and p not in left_out)
        removed = sorted(p for p in items if p not in files)
        changed = []
        for path, item in items.items():
            found = files.get(path)
            if found is None:
                continue
            if hashlib.sha256(found.data).hexdigest() != item.sha256:
                changed.append(path)
            elif captions is not None:
                caption = captions[path].caption if path in captions else None
                digest = hashlib.sha256(caption.encode()).hexdigest() if caption is not None else None
                if digest != item.caption_sha256:
                    changed.append(path)
        return DatasetDiff(added, removed, sorted(changed))

    def root_on_chain(self, dataset: Dataset) -> tuple[bool, int | None]:
        """Whether the chain holds the dataset's root (under its key), and in which block.

        The same items registered again give the same root: the chain keeps the first registration (and the
        first manifest's CID), which proves the root all the same.
        """
        entry = self.chain.lookup(dataset_key(dataset.root))
        return entry.registered, entry.block_number

    def prove(self, dataset_id: str, sha256: str) -> MembershipProof | None:
        """The Merkle proof of the item with this image SHA-256, checked against the root on chain; None if absent."""
        sha256 = sha256.lower().removeprefix("0x")
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InputError("sha256 must be 64 hex characters")
        dataset = self.get(dataset_id)
        items = self.items(dataset_id)
        member = next((i for i in items if i.sha256 == sha256), None)
        if member is None:
            return None
        tree = MerkleTree.build([item_hash(i.sha256, i.caption_sha256) for i in items])
        value = item_hash(member.sha256, member.caption_sha256)
        proof = tree.proof(value)
        on_chain, block = self.root_on_chain(dataset)
        root = bytes.fromhex(dataset.root.removeprefix("0x"))
        return MembershipProof(
            dataset_id=dataset.id, path=member.path, sha256=sha256, caption_sha256=member.caption_sha256,
            item_hash=value.hex(), proof=["0x" + p.hex() for p in proof], root=dataset.root,
            registry_key="0x" + dataset_key(dataset.root), on_chain=on_chain, block_number=block,
            valid=on_chain and tree.root == root and verify_proof(value, proof, root),
        )  # fmt: skip

    def near(self, dataset_id: str, data: bytes, *, max_distance: int = NEAR_DISTANCE) -> list[NearMatch]:
        """Dataset items whose ISCC image code is close to this image's, closest first (never a proof)."""
        try:
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except Exception:  # PIL raises many kinds for what is not an image
            raise InputError("the file is not an image: no near-duplicate lookup") from None
        code, _ = iscc_image_code(iscc_thumbnail(rgb))
        matches = [
            NearMatch(i.path, i.sha256, d)
            for i in self.items(dataset_id)
            if i.iscc and (d := iscc_distance(code, i.iscc)) <= max_distance
        ]
        return sorted(matches, key=lambda m: (m.distance, m.path))

    # --- training ---------------------------------------------------------------------------
    def training_items(self, dataset_id: str, folder: Path | None = None) -> list[TrainingItem]:
        """The dataset's images for a trainer: the stored (metadata-stripped) copies when it was pinned, else
        ``folder``'s files after re-hashing them (``DatasetChangedError`` names changed or missing files)."""
        items = self.items(dataset_id)
        if all(i.cid for i in items):
            return [TrainingItem(i.path, _rgb(self.store.cat(str(i.cid))), i.caption) for i in items]
        if folder is None:
            raise InputError(f"dataset {dataset_id} was registered without --pin: give the folder of its files")
        diff = self.verify_folder(dataset_id, folder)
        if diff.removed or diff.changed:
            names = diff.changed + diff.removed
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            raise DatasetChangedError(
                f"the files of dataset {dataset_id} changed since registration ({len(diff.changed)} changed, "
                f"{len(diff.removed)} missing): {shown}"
            )
        return [TrainingItem(i.path, _rgb((folder / i.path).read_bytes()), i.caption) for i in items]


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
