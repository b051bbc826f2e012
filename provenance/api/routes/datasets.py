"""``POST /v1/datasets``, ``GET /v1/datasets/{id}``, ``GET /v1/datasets/{id}/proof``: datasets and membership.

An upload is a zip or tar archive (multipart field ``file``, with ``captions.jsonl`` inside when captions are
given; form fields ``name``, ``license``, ``creators`` as a JSON list) or a JSON body with the items and their
base64 images. Uploaded images are always stored, as metadata-stripped copies. Registering needs the
``certify`` scope, like the other write routes; reading a manifest and asking for a proof are public.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from provenance.api.deps import ServicesDep, SettingsDep, require_scope
from provenance.api.routes.common import ERRORS, WRITE_ERRORS
from provenance.auth import Caller
from provenance.errors import InputError, NotFoundError, PayloadTooLargeError
from provenance.lineage.common import Creator
from provenance.lineage.dataset_archive import archive_files, json_files
from provenance.lineage.datasets import DatasetService

router = APIRouter(responses=ERRORS)
UNPACKED_FACTOR = 4  # an archive may unpack to this many times the upload limit


def get_datasets(services: ServicesDep) -> DatasetService:
    """The dataset service over the app's database, content store, signing keys and chain."""
    return DatasetService(services.sessions, services.store, services.keys, services.chain.registry)


DatasetsDep = Annotated[DatasetService, Depends(get_datasets)]


class DatasetItemIn(BaseModel):
    """One item of a JSON upload: a file name, its image as base64, and its caption, licence and source."""

    file: str = Field(max_length=1000)
    image: str = Field(description="The image bytes, base64")
    caption: str | None = Field(default=None, max_length=10_000)
    license: str | None = Field(default=None, max_length=128)
    source: str | None = Field(default=None, max_length=2000)


class DatasetIn(BaseModel):
    """A JSON dataset upload."""

    name: str = Field(min_length=1, max_length=255)
    license: str | None = Field(default=None, max_length=128)
    creators: list[Creator] = Field(default_factory=list)
    items: list[DatasetItemIn]


class DatasetOut(BaseModel):
    """A registered dataset: its root, manifest CID, chain status and what registration found (hygiene)."""

    dataset_id: str
    name: str
    root: str
    item_count: int
    manifest_cid: str
    status: str
    registry_key: str | None
    block_number: int | None
    hygiene: dict[str, Any]


class ProofOut(BaseModel):
    """A membership proof and whether it checks against the root registered on chain."""

    dataset_id: str
    path: str
    sha256: str
    caption_sha256: str | None
    item_hash: str
    proof: list[str]
    root: str
    registry_key: str
    on_chain: bool
    block_number: int | None
    valid: bool


async def _read_limited(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the upload is larger than the limit of {limit} bytes")
    return bytes(body)


def _creators(text: str | None) -> list[Creator]:
    if not text:
        return []
    try:
        return [Creator.model_validate(c) for c in json.loads(text)]
    except (json.JSONDecodeError, TypeError, ValidationError) as exc:
        raise InputError(f"creators must be a JSON list of {{address, bps, name?}}: {exc}") from None


async def _multipart(request: Request, limit: int) -> tuple[bytes, dict[str, str | None]]:
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InputError("send the archive as a multipart field named 'file' (zip or tar)")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"the archive is larger than the limit of {limit} bytes")
    fields = {k: (v if isinstance(v, str) else None) for k, v in form.items() if k != "file"}
    return data, {"name": fields.get("name") or upload.filename or "dataset", **fields}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` references inlined (the OpenAPI document has no such defs)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _inlined(DatasetIn.model_json_schema())},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "zip or tar archive"},
                    "name": {"type": "string"},
                    "license": {"type": "string"},
                    "creators": {"type": "string", "description": "JSON list of {address, bps, name?}"},
                },
            }
        },
    },
}


@router.post(
    "/v1/datasets",
    status_code=201,
    response_model=DatasetOut,
    tags=["datasets"],
    responses=WRITE_ERRORS,
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def register_dataset(
    request: Request,
    datasets: DatasetsDep,
    settings: SettingsDep,
    caller: Annotated[Caller, Depends(require_scope("certify"))],
) -> DatasetOut:
    """Register a dataset from an archive (multipart ``file``) or a JSON list of items (scope ``certify``).

    The root is registered on chain by the anchoring worker: ``status`` is ``pending`` until then
    (``GET /v1/datasets/{id}`` shows it). Hygiene: duplicates, near-duplicates, images under 512x512 and
    files that are not images (left out) are reported; stored copies carry no metadata of the originals.
    """
    limit = settings.max_upload_bytes
    if request.headers.get("content-type", "").startswith("multipart/"):
        data, fields = await _multipart(request, limit)
        files = await run_in_threadpool(archive_files, data, unpacked_limit=limit * UNPACKED_FACTOR)
        name, license, creators = str(fields["name"])[:255], fields.get("license"), _creators(fields.get("creators"))
    else:
        try:
            body = DatasetIn.model_validate_json(await _read_limited(request, limit))
        except ValidationError as exc:
            raise InputError(f"the body is not a dataset upload: {exc.errors()[0]['msg']}") from None
        files = json_files([item.model_dump() for item in body.items])
        name, license, creators = body.name, body.license, body.creators
    result = await run_in_threadpool(
        lambda: datasets.register_items(
            files, name=name, license=license, creators=creators, pin=True, account_id=caller.account_id
        )
    )
    d = result.dataset
    return DatasetOut(
        dataset_id=d.id, name=d.name, root=d.root, item_count=d.item_count, manifest_cid=d.manifest_cid,
        status=d.status, registry_key=d.registry_key, block_number=d.block_number, hygiene=result.hygiene.as_dict(),
    )  # fmt: skip


@router.get("/v1/datasets/{dataset_id}", tags=["datasets"])
def dataset_manifest(dataset_id: str, datasets: DatasetsDep) -> dict[str, Any]:
    """The dataset's signed manifest, with its current chain status beside it (``chain``, not signed)."""
    manifest = datasets.manifest(dataset_id)
    d = datasets.get(dataset_id)
    chain = {"status": d.status, "registry_key": d.registry_key, "tx_hash": d.tx_hash, "block_number": d.block_number}
    return {"dataset_id": d.id, "manifest_cid": d.manifest_cid, "chain": chain, "manifest": manifest}


@router.get("/v1/datasets/{dataset_id}/proof", response_model=ProofOut, tags=["datasets"])
def dataset_proof(
    dataset_id: str,
    datasets: DatasetsDep,
    sha256: Annotated[str, Query(description="The image's SHA-256 (hex)")],
) -> ProofOut:
    """The Merkle proof of the item with this image hash, checked against the root read from chain (404 when
    the image is not in the dataset)."""
    proof = datasets.prove(dataset_id, sha256)
    if proof is None:
        raise NotFoundError(f"no item of dataset {dataset_id} has the SHA-256 {sha256[:64]}")
    return ProofOut(**proof.as_dict())
