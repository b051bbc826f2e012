"""Dependencies injected into routes: services, uploads, the caller behind an API key, rate limits.

Every route runs ``rate_limited_caller`` (``create_app`` adds it), which authenticates the bearer key
when one is sent and counts the request against that key or, without a key, the client address.
Routes then narrow it: ``CurrentAccount`` (any valid key), ``require_scope("certify")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from provenance.auth import Caller
from provenance.errors import AuthenticationError, InputError, PayloadTooLargeError, PermissionDeniedError
from provenance.runtime.services import Services

# auto_error=False: reads stay public, so a missing header is not an error here; routes that need
# a key say so. The scheme still appears in the OpenAPI document (the Authorize button in /docs).
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `provenance apikey create`, or `<data_dir>/admin.key` after the first start.",
)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def _authenticate(
    request: Request, services: Services, credentials: HTTPAuthorizationCredentials | None
) -> Caller | None:
    """The caller behind the bearer key, or None without one. A key that is sent must be valid
    (401 otherwise), also on public routes: a client with a wrong key should learn it at once."""
    if credentials is None:
        if request.headers.get("authorization"):  # a header in another scheme (Basic, a bare key...)
            raise AuthenticationError("Send the API key as 'Authorization: Bearer KEY'.", invalid_token=True)
        return None
    return services.accounts.authenticate(credentials.credentials)


def rate_limited_caller(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller | None:
    """Authenticates a bearer key if one is sent, and counts the request against the key's rate
    or, without a valid key, the client address (429 when over).

    Behind a reverse proxy, run uvicorn with ``--proxy-headers --forwarded-allow-ips`` so the
    client address is the real one and not the proxy's.
    """
    client = request.client.host if request.client else "unknown"
    try:
        caller = _authenticate(request, services, credentials)
    except AuthenticationError:
        services.limits.check_request(None, client)  # guessing keys costs the address's budget
        raise
    decision = services.limits.check_request(caller, client)
    if decision is not None:
        # Picked up by the middleware in app.py, which adds X-RateLimit-* headers to the response.
        request.state.rate_limit = decision
    return caller


OptionalCaller = Annotated[Caller | None, Depends(rate_limited_caller)]


def current_account(caller: OptionalCaller) -> Caller:
    """Any valid key; 401 without one."""
    if caller is None:
        raise AuthenticationError("This endpoint needs an API key: send 'Authorization: Bearer KEY'.")
    return caller


CurrentAccount = Annotated[Caller, Depends(current_account)]


def require_scope(scope: str) -> Callable[[Caller], Caller]:
    """A dependency: a key with ``scope`` (``admin`` includes all); 401 without a key, 403 without the scope.

    Use as ``caller: Annotated[Caller, Depends(require_scope("certify"))]`` or in ``dependencies=[...]``.
    """

    def check(caller: CurrentAccount) -> Caller:
        if not caller.has(scope):
            raise PermissionDeniedError(
                f"API key {caller.key_id} lacks the {scope!r} scope (it has: {', '.join(sorted(caller.scopes))})."
            )
        return caller

    check.__name__ = f"require_scope_{scope}"
    return check


def verify_access(services: ServicesDep, caller: OptionalCaller) -> Caller | None:
    """Verification is public unless the operator sets PROVENANCE_VERIFY_REQUIRES_KEY."""
    if services.settings.verify_requires_key:
        return require_scope("verify")(current_account(caller))
    return caller


def read_upload(upload: UploadFile | None, limit: int) -> bytes:
    """Read an upload, refusing it as soon as it passes ``limit`` bytes."""
    if upload is None:
        raise InputError("Send the image as a multipart form field named 'file'.")
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLargeError(f"The file is {upload.size} bytes; the limit is {limit} bytes.")
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLargeError(f"The file is larger than the limit of {limit} bytes.")
    return data
