"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provenance import PRODUCT_NAME, __version__
from provenance.api.deps import current_account, rate_limited_caller
from provenance.api.docs import install_docs
from provenance.api.errors import install_error_handlers
from provenance.api.routes import ROUTERS
from provenance.api.web import install_web
from provenance.config import Settings
from provenance.observability.http import install_observability
from provenance.runtime.services import Services


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
        for api_router in ROUTERS
        for route in api_router.routes  # included without a prefix
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
        # /docs and /redoc come from provenance/api/docs.py: local assets, no CDN, under a CSP.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RateLimitHeaders)
    for api_router in ROUTERS:
        app.include_router(api_router)
    install_web(app)  # the web interface at / (static files under /static)
    install_docs(app)  # /docs and /redoc, assets at /docs/assets
    _document_optional_keys(app)
    install_error_handlers(app)  # every error answers an ErrorOut (provenance/api/errors.py)
    install_observability(app)  # GET /metrics, X-Request-Id, request metrics (provenance/observability)
    return app
