"""``GET /healthz``: whether each dependency answers (load balancers read the status)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from provenance.api.deps import HealthDep
from provenance.api.routes.common import ERRORS
from provenance.api.schemas import HealthOut

router = APIRouter(responses=ERRORS)


@router.get("/healthz", response_model=HealthOut, tags=["health"], responses={503: {"model": HealthOut}})
def healthz(health: HealthDep) -> JSONResponse:
    """Each dependency asked in turn; 503 names the ones that do not answer (load balancers read the status)."""
    body = health.report()
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if body.down else 200)
