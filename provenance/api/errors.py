"""How the API answers an error: the HTTP status of each domain error, its headers and its JSON body.

Domain errors (``provenance/errors.py``) say what went wrong and know nothing of HTTP; this module is
the one place that maps them to a status code. Every answer is ``{"error": code, "detail": message,
**extra}`` (``ErrorOut``), whatever raised it: a domain error, a request FastAPI could not validate,
an unknown path, a failing dependency (503) or a bug (500, details in the server log only).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from provenance.api.idempotency import IdempotencyInProgressError, IdempotencyKeyReusedError
from provenance.errors import (
    AlreadyCertifiedError,
    AlreadyMintedError,
    AuthenticationError,
    ChainError,
    ChainUnavailableError,
    ConfigurationError,
    CorruptImageError,
    DependencyUnavailableError,
    DerivativeError,
    DerivativeNotMintableError,
    GenerationRequestError,
    ImageTooComplexError,
    InputError,
    InvalidAddressError,
    InvalidSourceTypeError,
    IpfsError,
    JobFinishedError,
    MetadataTooLargeError,
    NftUnavailableError,
    NotFoundError,
    NotRegisteredError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PromptRejectedError,
    ProvenanceError,
    QueueFullError,
    RateLimitedError,
    ServerBusyError,
    StorageUnavailableError,
    TimeStampError,
    TooManyPixelsError,
    UnknownModelError,
    UnsupportedMediaError,
    dependency_error,
)
from provenance.observability import metrics

log = logging.getLogger(__name__)

# The status of each error class; a class not listed takes the status of its nearest listed base
# (``QuotaExceededError`` is a ``RateLimitedError``, a chain adapter's own errors are ``ChainError``s).
STATUS_BY_ERROR: dict[type[ProvenanceError], int] = {
    ProvenanceError: 500,
    ConfigurationError: 500,
    InputError: 400,
    UnsupportedMediaError: 415,
    PayloadTooLargeError: 413,
    TooManyPixelsError: 413,
    MetadataTooLargeError: 413,
    CorruptImageError: 422,
    ImageTooComplexError: 422,
    InvalidSourceTypeError: 422,
    PromptRejectedError: 422,
    UnknownModelError: 422,
    GenerationRequestError: 422,
    InvalidAddressError: 422,
    DerivativeError: 422,
    IdempotencyKeyReusedError: 422,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    DerivativeNotMintableError: 403,
    NotFoundError: 404,
    AlreadyCertifiedError: 409,
    JobFinishedError: 409,
    NotRegisteredError: 409,
    AlreadyMintedError: 409,
    IdempotencyInProgressError: 409,
    RateLimitedError: 429,
    QueueFullError: 429,
    ChainError: 502,
    IpfsError: 502,
    TimeStampError: 502,
    ChainUnavailableError: 503,
    NftUnavailableError: 503,
    DependencyUnavailableError: 503,
    ServerBusyError: 503,
    StorageUnavailableError: 503,
}

INTERNAL_ERROR = "An unexpected error occurred; the server log has the details."


def http_status(exc: ProvenanceError) -> int:
    """The status code the API answers ``exc`` with (its class's, or its nearest listed base's)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def http_headers(exc: ProvenanceError) -> dict[str, str] | None:
    """The headers that go with ``exc``: ``Retry-After`` when a retry may work later, the bearer challenge on 401."""
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationError):
        # RFC 6750: a client that sent a bad token is told so; one that sent none just gets the scheme.
        headers["WWW-Authenticate"] = 'Bearer realm="provenance"' + (
            ', error="invalid_token"' if exc.invalid_token else ""
        )
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers or None


def error_response(
    status: int, code: str, detail: object, *, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    """The one shape of every error answer: ``{"error": code, "detail": detail, **extra}``."""
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status, headers=headers)


def domain_error_response(exc: ProvenanceError) -> JSONResponse:
    """A domain error as the API answers it; machine-readable fields (quota, resets_at, record_id) join the body."""
    return error_response(http_status(exc), exc.code, exc.detail, headers=http_headers(exc), **exc.extra)


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method some route serves at this path (GET and DELETE of a job are two routes)."""
    return ", ".join(
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)
    )


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception as an ``ErrorOut``: domain errors by the table above, the rest as described here."""

    @app.exception_handler(ProvenanceError)
    async def provenance_error(_: Request, exc: ProvenanceError) -> JSONResponse:
        metrics.count_error(exc)  # by code; refusals for load and dependency faults apart
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", [])), "msg": e.get("msg")} for e in exc.errors()]
        return error_response(422, "validation_error", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110: a 405 lists the methods the resource has
            headers["Allow"] = _allowed_methods(app, request.scope) or headers.get("Allow", "")
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail, headers=headers or None
        )

    async def dependency_failure(_: Request, exc: Exception) -> JSONResponse:
        # The database, the data dir or the chain node failing is a 503 naming it, not a 500 (see errors.py).
        mapped = dependency_error(exc)
        metrics.count_error(exc)
        if mapped is None:
            log.exception("unexpected error", exc_info=exc)
            return error_response(500, "internal_error", INTERNAL_ERROR)
        log.warning("%s: %s: %s", mapped.code, type(exc).__name__, exc)
        return error_response(http_status(mapped), mapped.code, mapped.detail)

    for dependency_exc in (OSError, sa_exc.OperationalError, sa_exc.InternalError, sa_exc.DisconnectionError):
        app.add_exception_handler(dependency_exc, dependency_failure)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", INTERNAL_ERROR)
