"""The C2PA Soft Binding Resolution API (specification 2.4, API 2.3.0) under ``/c2pa/sbr/v1``.

The repository is the service's records: every certified image carries its manifest store, its ISCC
fingerprint (``io.iscc.v0``) and the keyed mark (``org.provenance.invisible-watermark.dwtDctSvd-rs``). A
record is never named on evidence a client can copy:

- ``POST /matches/byContent``: the asset itself runs the verify pipeline; a match is returned only when
  verify names a record on trusted evidence (exact bytes, a trusted manifest, the keyed mark or a fingerprint
  candidate bound to the certified original's content). An unconfirmed candidate is never a match.
- ``GET/POST /matches/byBinding``: a lookup of a *declared* binding, not a verification. ``io.iscc.v0``: the
  records whose manifest declares exactly this code (no similarity search on a bare value); no
  ``similarityScore`` is given, the client checks the recovered manifest against its asset. The keyed mark has
  no public reader, so any value a caller holds for it was copied (from a manifest or a certify answer), not
  read from pixels: it matches nothing here; send the asset to byContent.
- ``GET /manifests/{manifestId}``: the manifest store (``application/c2pa``) as embedded in the certified file.
- Store routes (``POST /manifests``, ``POST/PUT /bindings``, ``DELETE /manifests/{id}``) answer 403: manifests
  enter only through certification. ``POST /matches/byReference`` answers 403: the service fetches no URL for
  a client (SSRF); upload the asset to byContent.

Errors use the statuses the specification lists (400, 403, 404, 415), each with the usual JSON body
(``{"error", "detail"}``). These routes are outside the app's own OpenAPI document: the vendored specification
document (``GET /c2pa/sbr/v1/openapi.json``) describes them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select, update

from provenance import media
from provenance.api.deps import (
    LimitsDep,
    OptionalCaller,
    PixelBudgetDep,
    RecordsDep,
    SessionsDep,
    SettingsDep,
    StoreDep,
    VerifierDep,
    verify_access,
)
from provenance.db.models import Record, RecordFingerprint
from provenance.errors import (
    AuthenticationError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    UnsupportedMediaError,
)
from provenance.manifests.vocabulary import FINGERPRINT_ALG, SOFT_BINDING_ALG
from provenance.sbr import manifest_store, specification
from provenance.sbr.store import active_manifest_label

PREFIX = "/c2pa/sbr/v1"
WATERMARK_ALG = SOFT_BINDING_ALG  # the alg id every manifest's watermark soft-binding assertion carries
DEFAULT_MAX_RESULTS = 10
MAX_VALUE_CHARS = 4096  # an ISCC code is 16 base32 characters; anything this long is not a binding value
# similarityScore of a byContent match, by how verify bound the upload to the record.
SCORES = {"exact": 100, "container": 100, "transformed": 90, "edited": 70, "composite": 50}
TRUSTED_VERDICTS = {"authentic", "pending", "unavailable", "modified"}

router = APIRouter(prefix=PREFIX, tags=["c2pa-sbr"], include_in_schema=False)

T = TypeVar("T")


def _error(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status)


def _answer(run: Callable[[], T]) -> T | JSONResponse:
    """Run a route body; a domain error becomes the status the specification lists for it."""
    try:
        return run()
    except UnsupportedMediaError as exc:
        return _error(415, exc.code, exc.detail)
    except InputError as exc:
        return _error(400, exc.code, exc.detail)
    except (AuthenticationError, PermissionDeniedError) as exc:
        return _error(403, "forbidden", exc.detail)
    except NotFoundError as exc:
        return _error(404, exc.code, exc.detail)


def _max_results(request: Request) -> int:
    raw = request.query_params.get("maxResults")
    if raw is None:
        return DEFAULT_MAX_RESULTS
    try:
        value = int(raw)
    except ValueError:
        raise InputError("maxResults must be an integer of at least 1.") from None
    if value < 1:
        raise InputError("maxResults must be an integer of at least 1.")
    return value


def manifest_id(record: Record, sessions: SessionsDep, store: StoreDep) -> str | None:
    """The record's manifest id: its certified file's active manifest label, kept in ``manifest_label`` once read
    (certify does not fill that column yet, so it is filled here the first time this API resolves the record)."""
    if record.manifest_label:
        return record.manifest_label
    data = manifest_store(store.cat(record.cid))
    label = active_manifest_label(data) if data is not None else None
    if label is not None:
        with sessions.begin() as session:
            session.execute(update(Record).where(Record.id == record.id).values(manifest_label=label))
    return label


def _by_binding(sessions: SessionsDep, store: StoreDep, alg: Any, value: Any, limit: int) -> dict[str, Any]:
    if not isinstance(alg, str) or not isinstance(value, str) or not alg or not value:
        raise InputError("Send 'alg' and 'value', both non-empty strings.")
    if len(value) > MAX_VALUE_CHARS:
        raise InputError(f"The binding value is longer than {MAX_VALUE_CHARS} characters.")
    if alg == WATERMARK_ALG:
        # The keyed mark has no public reader: a value held by a caller was copied, never read from pixels.
        return {"matches": []}
    if alg != FINGERPRINT_ALG:
        raise InputError(f"Unsupported algorithm {alg!r}: see /services/supportedAlgorithms.")
    code = _iscc_code(value)
    with sessions() as session:
        rows = (
            session.execute(
                select(Record)
                .join(RecordFingerprint, RecordFingerprint.record_id == Record.id)
                .where(RecordFingerprint.iscc == code)
                .order_by(Record.created_at)
                .limit(limit)
            )
            .scalars()
            .all()
        )
    labels = [manifest_id(record, sessions, store) for record in rows]
    return {"matches": [{"manifestId": label} for label in labels if label is not None]}


def _iscc_code(value: str) -> str:
    """The ISCC code a byBinding value names: the code itself (``ISCC:...``, what a manifest's soft-binding
    block holds) or, as the specification asks, that code base64-encoded."""
    if value.startswith("ISCC:"):
        return value
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InputError("An io.iscc.v0 value is an ISCC code ('ISCC:...'), or that code base64-encoded.") from None
    if not decoded.startswith("ISCC:"):
        raise InputError("An io.iscc.v0 value is an ISCC code ('ISCC:...'), or that code base64-encoded.")
    return decoded


@router.get("/services/supportedAlgorithms")
def supported_algorithms() -> dict[str, Any]:
    """The algorithms byContent reads and byBinding looks up (see the module docstring for what each means)."""
    return {"watermarks": [{"alg": WATERMARK_ALG}], "fingerprints": [{"alg": FINGERPRINT_ALG}]}


@router.get("/matches/byBinding", response_model=None)
def query_by_binding(request: Request, sessions: SessionsDep, store: StoreDep) -> dict[str, Any] | JSONResponse:
    """Records whose manifest declares exactly this binding value (a lookup, never a confirmation)."""
    params = request.query_params
    return _answer(lambda: _by_binding(sessions, store, params.get("alg"), params.get("value"), _max_results(request)))


@router.post("/matches/byBinding", response_model=None)
async def query_by_large_binding(
    request: Request, sessions: SessionsDep, store: StoreDep
) -> dict[str, Any] | JSONResponse:
    """The same lookup with the binding in a JSON body (``c2pa.softBindingQuery``)."""
    raw = await request.body()

    def run() -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InputError("The body is not JSON: send {'alg': ..., 'value': ...}.") from None
        if not isinstance(body, dict):
            raise InputError("The body is a JSON object: {'alg': ..., 'value': ...}.")
        return _by_binding(sessions, store, body.get("alg"), body.get("value"), _max_results(request))

    return _answer(run)


@router.post("/matches/byContent", response_model=None)
async def query_by_content(
    request: Request,
    verifier: VerifierDep,
    settings: SettingsDep,
    limits: LimitsDep,
    budget: PixelBudgetDep,
    records: RecordsDep,
    sessions: SessionsDep,
    store: StoreDep,
    caller: OptionalCaller,
) -> dict[str, Any] | JSONResponse:
    """Run verify on the uploaded asset (the raw request body); a match only on trusted evidence."""
    raw = await _read_body(request, settings.max_upload_bytes)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()

    def run() -> dict[str, Any]:
        allowed = verify_access(settings, caller)
        if isinstance(raw, int):
            raise InputError(f"The asset is larger than the limit of {raw} bytes.")
        if content_type and not content_type.startswith("image/") and content_type != "application/octet-stream":
            raise UnsupportedMediaError(f"Only images are matched here, not {content_type!r}.")
        alg = request.query_params.get("alg")
        if alg is not None and alg not in (FINGERPRINT_ALG, WATERMARK_ALG):
            raise InputError(f"Unsupported algorithm {alg!r}: see /services/supportedAlgorithms.")
        limit = _max_results(request)
        _, width, height = media.check_limits(
            raw, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels, limits=verifier.structure_limits
        )
        client = request.client.host if request.client else "unknown"
        key = f"key:{allowed.key_id}" if allowed is not None else f"ip:{client}"
        with limits.verify_cost(allowed, client, width * height), budget.reserve(width * height, client=key):
            result = verifier.verify(raw)
        if result.record_id is None or result.verdict not in TRUSTED_VERDICTS:
            return {"matches": []}  # nothing trusted names a record: a candidate alone is never a match
        record = records.get(result.record_id)
        label = manifest_id(record, sessions, store) if record is not None else None
        if label is None:
            return {"matches": []}
        kind = "exact" if result.verdict != "modified" else (result.modification or "transformed")
        return {"matches": [{"manifestId": label, "similarityScore": SCORES.get(kind, 50)}][:limit]}

    return _answer(run)


async def _read_body(request: Request, limit: int) -> bytes | int:
    """The request body, or ``limit`` (an int) as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return limit
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/matches/byReference", response_model=None)
def query_by_reference() -> JSONResponse:
    """Not offered: the service fetches no URL on a client's behalf (SSRF). Upload the asset to byContent."""
    return _error(
        403, "forbidden", "This repository fetches no URL for a client; POST the asset to /matches/byContent."
    )


_STORE_REFUSAL = "Manifests enter this repository only by certification (POST /v1/certify); it stores none sent here."


@router.post("/manifests", response_model=None)
def add_manifest() -> JSONResponse:
    """Refused (403): see the module docstring."""
    return _error(403, "forbidden", _STORE_REFUSAL)


@router.post("/bindings", response_model=None)
def associate_manifest() -> JSONResponse:
    """Refused (403): see the module docstring."""
    return _error(403, "forbidden", _STORE_REFUSAL)


@router.put("/bindings", response_model=None)
def update_associated_manifest() -> JSONResponse:
    """Refused (403): see the module docstring."""
    return _error(403, "forbidden", _STORE_REFUSAL)


@router.delete("/manifests/{manifest_id}", response_model=None)
def delete_manifest(manifest_id: str) -> JSONResponse:
    """Refused (403): see the module docstring."""
    return _error(403, "forbidden", _STORE_REFUSAL)


@router.get("/manifests/{manifest_id}", response_model=None)
def get_manifest(manifest_id: str, request: Request, sessions: SessionsDep, store: StoreDep) -> Response | JSONResponse:
    """The manifest store embedded in the record's certified file (``application/c2pa``)."""

    def run() -> Response:
        active_only = request.query_params.get("returnActiveManifest", "false").lower()
        if active_only not in ("true", "false"):
            raise InputError("returnActiveManifest is true or false.")
        with sessions() as session:
            record = session.scalars(select(Record).where(Record.manifest_label == manifest_id).limit(1)).first()
        if record is None:
            raise NotFoundError(f"No C2PA manifest {manifest_id!r} in this repository.")
        data = manifest_store(store.cat(record.cid))
        if data is None:
            raise NotFoundError(f"The certified file of manifest {manifest_id!r} carries no manifest store.")
        # returnActiveManifest: our stores are the certified file's own; its active manifest's ingredients are
        # part of what validates it, so the whole store is returned either way.
        return Response(data, media_type="application/c2pa", headers={"Cache-Control": "public, max-age=3600"})

    return _answer(run)


@router.get("/openapi.json")
def openapi_document(settings: SettingsDep) -> dict[str, Any]:
    """The specification's OpenAPI document, its server set to this repository."""
    document = specification()
    document["servers"] = [{"url": f"{settings.effective_public_url}{PREFIX}"}]
    return document


__all__ = ["PREFIX", "WATERMARK_ALG", "router"]
