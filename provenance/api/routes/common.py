"""What the route modules share: the error answers each documents, the pixel budget, record lookup."""

from __future__ import annotations

from contextlib import AbstractContextManager

from provenance import media
from provenance.api.schemas import ErrorOut
from provenance.config import Settings
from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.errors import NotFoundError
from provenance.media.budget import PixelBudget
from provenance.runtime.pipelines import structure_limits

# Answers any API route may give (documented on every route of the API's routers).
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut} for code in (400, 401, 404, 409, 413, 415, 422, 429, 502)
}
# Answers of routes that need a scope or write: a key without the scope (403), a dependency down (503).
WRITE_ERRORS: dict[int | str, dict[str, object]] = {403: {"model": ErrorOut}, 503: {"model": ErrorOut}}


def within_budget(
    settings: Settings, budget: PixelBudget, data: bytes, client: str | None = None
) -> AbstractContextManager[int]:
    """Refuse a bad upload from its headers alone, then hold its pixels in the shared budget while it is
    decoded and worked on (waits for room; 503 ``busy`` with ``Retry-After`` when none is made in time).
    ``client`` (an account or address) may hold only its share of the budget at once."""
    limits = structure_limits(settings)  # the certifier's limits (no module-wide state)
    _, width, height = media.check_limits(
        data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels, limits=limits
    )
    return budget.reserve(width * height, client=client)


def record_or_404(records: RecordRepository, record_id: str) -> Record:
    """The record ``record_id``; 404 ``not_found`` when there is none."""
    record = records.get(record_id)
    if record is None:
        raise NotFoundError(f"No record {record_id!r}.")
    return record
