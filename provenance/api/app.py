"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import exc as sa_exc
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provenance import PRODUCT_NAME, __version__
from provenance.api.deps import current_account, rate_limited_caller
from provenance.api.routes import router
from provenance.api.trust import router as trust_router
from provenance.api.web import install_web
from provenance.config import Settings
from provenance.errors import ProvenanceError, dependency_error
from provenance.runtime.services import Services

log = logging.getLogger(__name__)


def _error(
    status: int, code: str, detail: object, *, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route serves at this path (GET and DELETE of a job are two routes)."""
    return ", ".join(
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    )


def _needs_key(dependant: Dependant) -> bool:
    return any(sub.call is current_account or _needs_key(sub) for sub in dependant.dependencies)


def _error_body(document: dict[str, Any]) -> dict[str, Any]:
    if "ErrorOut" not in document.get("components", {}).get("schemas", {}):
        return {}
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}


def _document_optional_keys(app: FastAPI) -> None:
    """Every route runs the bearer scheme (to count requests per key), so FastAPI lists ``ApiKey`` as required
    on all of them; public routes take a key or none, which OpenAPI writes as ``security: [{}, {ApiKey: []}]``.
    The same dependency answers 401 (a wrong key) and 429 on every route, and a body that does not parse is a
    400 wherever there is a body: the document lists them. A 422 is always an ``ErrorOut`` (``validation_error``
    handler), never FastAPI's default ``HTTPValidationError``."""
    default_openapi = app.openapi
    needs_key = {
        (method.lower(), route.path)
        for route in (*router.routes, *trust_router.routes)  # included without a prefix
        if isinstance(route, APIRoute) and _needs_key(route.dependant)
        for method in route.methods or ()
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = default_openapi()
            for path, operations in document.get("paths", {}).items():
                for method, operation in operations.items():
                    if operation.get("security") and (method, path) not in needs_key:
                        operation["security"] = [{}, *operation["security"]]
                    answers = [("401", "A key was sent and is not valid"), ("429", "Rate limited")]  # any route
                    if "requestBody" in operation:
                        answers.append(("400", "The body cannot be parsed"))
                    for status, what in answers:
                        operation["responses"].setdefault(status, {"description": what, **_error_body(document)})
                    invalid = operation["responses"].get("422", {})
                    if "HTTPValidationError" in str(invalid.get("content")):  # our handler answers ErrorOut
                        invalid.update(_error_body(document))
        return app.openapi_schema or default_openapi()

    app.openapi = openapi  # type: ignore[method-assign]


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
    install_web(app)  # the web interface at / (static files under /static)
    _document_optional_keys(app)

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
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: a 405 lists the methods the resource has
            headers["Allow"] = _allowed_methods(app, request.scope) or headers.get("Allow", "")
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail, headers=headers or None)

    async def dependency_failure(_: Request, exc: Exception) -> JSONResponse:
        # The database, the data dir or the chain node failing is a 503 naming it, not a 500 (see errors.py).
        mapped = dependency_error(exc)
        if mapped is None:
            log.exception("unexpected error", exc_info=exc)
            return _error(500, "internal_error", "An unexpected error occurred; the server log has the details.")
        log.warning("%s: %s: %s", mapped.code, type(exc).__name__, exc)
        return _error(mapped.status_code, mapped.code, mapped.detail)

    for dependency_exc in (OSError, sa_exc.OperationalError, sa_exc.InternalError, sa_exc.DisconnectionError):
        app.add_exception_handler(dependency_exc, dependency_failure)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal_error", "An unexpected error occurred; the server log has the details.")

    return app
