"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provenance import PRODUCT_NAME, __version__
from provenance.api.deps import rate_limited_caller
from provenance.api.routes import router
from provenance.api.trust import router as trust_router
from provenance.config import Settings
from provenance.errors import ProvenanceError
from provenance.services import Services

log = logging.getLogger(__name__)


def _error(
    status: int, code: str, detail: object, *, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


class RateLimitHeaders:
    """Adds ``X-RateLimit-Limit/Remaining/Reset`` to every response whose request was counted.

    Plain ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched; the counted
    decision is left in the request state by ``rate_limited_caller``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            decision = (scope.get("state") or {}).get("rate_limit")
            if message["type"] == "http.response.start" and decision is not None:
                headers = MutableHeaders(scope=message)
                headers["X-RateLimit-Limit"] = str(decision.limit)
                headers["X-RateLimit-Remaining"] = str(decision.remaining)
                headers["X-RateLimit-Reset"] = str(int(decision.reset_at))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. With ``services`` given, the caller owns their lifecycle (tests, embedding)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        opened = Services.open(settings or Settings())
        app.state.services = opened
        try:
            yield
        finally:
            opened.close()

    app = FastAPI(
        title=PRODUCT_NAME,
        version=__version__,
        description="Certify AI-generated images (watermark, C2PA, ECDSA, IPFS, Ethereum) and verify uploads.",
        lifespan=lifespan,
        # On every route: authenticate a bearer key if one is sent, and count the request (429 when over).
        dependencies=[Depends(rate_limited_caller)],
    )
    app.add_middleware(RateLimitHeaders)
    app.include_router(router)
    app.include_router(trust_router)

    @app.exception_handler(ProvenanceError)
    async def provenance_error(_: Request, exc: ProvenanceError) -> JSONResponse:
        # 401 carries WWW-Authenticate, 429 Retry-After and machine-readable fields (quota, resets_at).
        extra = getattr(exc, "extra", None) or {}
        return _error(exc.status_code, exc.code, exc.detail, headers=getattr(exc, "headers", None), **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        return _error(422, "validation_error", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal_error", "An unexpected error occurred; the server log has the details.")

    return app
