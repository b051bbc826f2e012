"""Dependencies injected into routes: the parts they use, uploads, the caller behind an API key, rate limits.

Each route takes only what it uses (``CertifierDep``, ``VerifierDep``, ``RecordsDep``, ``JobsDep``...),
not the whole wiring (``ServicesDep`` stays for what needs it: authentication, the trust actions).
Every route runs ``rate_limited_caller`` (``create_app`` adds it), which authenticates the bearer key
when one is sent and counts the request against that key or, without a key, the client address.
Routes then narrow it: ``CurrentAccount`` (any valid key), ``require_scope("certify")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from provenance.api import idempotency
from provenance.api.health import HealthProbe
from provenance.auth import Caller, Limits
from provenance.certify.certifier import Certifier
from provenance.chain.setup import ChainConnection
from provenance.config import Settings
from provenance.db.repository import RecordRepository
from provenance.errors import AuthenticationError, InputError, PayloadTooLargeError, PermissionDeniedError
from provenance.ipfs import ContentStore
from provenance.jobs.service import JobService
from provenance.manifests.pki import C2paCredentials
from provenance.media.budget import PixelBudget
from provenance.nft.service import NftService
from provenance.runtime.services import Services
from provenance.signing import KeyStore
from provenance.verify.verifier import Verifier

# auto_error=False: reads stay public, so a missing header is not an error here; routes that need
# a key say so. The scheme still appears in the OpenAPI document (the Authorize button in /docs).
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `provenance apikey create`, or `<data_dir>/admin.key` after the first start.",
)


def get_services(request: Request) -> Services:
    """The wiring the app was started with (``create_app``'s lifespan)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    """The settings the service runs with."""
    return services.settings


def get_certifier(services: ServicesDep) -> Certifier:
    """The certify pipeline."""
    return services.certifier


def get_verifier(services: ServicesDep) -> Verifier:
    """The verifier (and its recent difference images)."""
    return services.verifier


def get_records(services: ServicesDep) -> RecordRepository:
    """The record repository (records, signing keys, anchor batches)."""
    return services.repository


def get_store(services: ServicesDep) -> ContentStore:
    """The content store (IPFS: embedded blockstore or Kubo)."""
    return services.store


def get_chain(services: ServicesDep) -> ChainConnection:
    """The chain clients: the registry and, when configured, the NFT contract."""
    return services.chain


def get_jobs(services: ServicesDep) -> JobService:
    """The generation job service."""
    return services.jobs


def get_nft(services: ServicesDep) -> NftService:
    """The NFT service (custodial mints, vouchers, minted tokens)."""
    return services.nft


def get_limits(services: ServicesDep) -> Limits:
    """Rate limits, daily quotas and verify costs."""
    return services.limits


def get_pixel_budget(services: ServicesDep) -> PixelBudget:
    """The pixels this instance may decode at once."""
    return services.pixel_budget


def get_signing_keys(services: ServicesDep) -> KeyStore:
    """The ECDSA signing keys (the active one signs new records)."""
    return services.keys


def get_credentials(services: ServicesDep) -> C2paCredentials:
    """The C2PA signer's certificate chain and trust anchors."""
    return services.credentials


def get_health(services: ServicesDep) -> HealthProbe:
    """The probes of ``/healthz``: the chain node, the database and the content store."""
    return HealthProbe(
        registry=services.chain.registry, repository=services.repository, store=services.store, engine=services.engine
    )


def get_sessions(services: ServicesDep) -> sessionmaker[Session]:
    """Database sessions (for what the API itself stores: idempotency keys)."""
    return services.sessions


def base_url(settings: Annotated[Settings, Depends(get_settings)]) -> str:
    """The prefix of the links in an answer: PROVENANCE_PUBLIC_URL, or "" for relative links. Never the request's
    Host header, which the client chooses (a forged one would otherwise land in stored idempotent answers)."""
    return settings.effective_public_url


SettingsDep = Annotated[Settings, Depends(get_settings)]
CertifierDep = Annotated[Certifier, Depends(get_certifier)]
VerifierDep = Annotated[Verifier, Depends(get_verifier)]
RecordsDep = Annotated[RecordRepository, Depends(get_records)]
StoreDep = Annotated[ContentStore, Depends(get_store)]
ChainDep = Annotated[ChainConnection, Depends(get_chain)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
NftDep = Annotated[NftService, Depends(get_nft)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
PixelBudgetDep = Annotated[PixelBudget, Depends(get_pixel_budget)]
SigningKeysDep = Annotated[KeyStore, Depends(get_signing_keys)]
CredentialsDep = Annotated[C2paCredentials, Depends(get_credentials)]
HealthDep = Annotated[HealthProbe, Depends(get_health)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
BaseUrl = Annotated[str, Depends(base_url)]


def get_idempotency(
    sessions: SessionsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            max_length=255,
            description="Makes a retry safe: the same key, account and request within 24 h get the first answer "
            "(no second record or job); the same key with another request is a 422.",
        ),
    ] = None,
) -> idempotency.Idempotent:
    """The request's ``Idempotency-Key`` header (optional), ready to run the route's work once per key."""
    return idempotency.Idempotent(sessions, idempotency_key)


IdempotencyDep = Annotated[idempotency.Idempotent, Depends(get_idempotency)]


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


def verify_access(settings: SettingsDep, caller: OptionalCaller) -> Caller | None:
    """Verification is public unless the operator sets PROVENANCE_VERIFY_REQUIRES_KEY."""
    if settings.verify_requires_key:
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
