"""Every error the service raises on purpose, in one place.

Each carries an HTTP status, a stable machine-readable ``code`` and a message that tells the user
what to do. The API turns them into ``{"error": code, "detail": message}``; the CLI prints the
message on one line.
"""

from __future__ import annotations


class ProvenanceError(Exception):
    """Base class: something the caller or operator can act on."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InputError(ProvenanceError):
    status_code = 400
    code = "bad_request"


class UnsupportedMediaError(InputError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLargeError(InputError):
    status_code = 413
    code = "payload_too_large"


class TooManyPixelsError(InputError):
    status_code = 413
    code = "too_many_pixels"


class CorruptImageError(InputError):
    status_code = 422
    code = "corrupt_image"


class MetadataTooLargeError(InputError):
    """More text, EXIF, XMP or ICC data (bytes or chunks) than an upload may carry; refused before parsing."""

    status_code = 413
    code = "metadata_too_large"


class ImageTooComplexError(InputError):
    """A container no real encoder writes (tens of thousands of chunks, hundreds of JPEG scans)."""

    status_code = 422
    code = "image_too_complex"


class InvalidSourceTypeError(InputError):
    status_code = 422
    code = "invalid_source_type"


class NotFoundError(ProvenanceError):
    status_code = 404
    code = "not_found"


class AlreadyCertifiedError(ProvenanceError):
    status_code = 409
    code = "already_certified"

    def __init__(self, detail: str, *, record_id: str | None = None) -> None:
        super().__init__(detail)
        self.record_id = record_id
        self.extra = {"record_id": record_id} if record_id else {}


class DerivativeError(ProvenanceError):
    """A declared derivative whose source is not a record of this service."""

    status_code = 422
    code = "invalid_derivative"


class DerivativeNotMintableError(ProvenanceError):
    """Minting a derivative of another account's record: the token would sell their work."""

    status_code = 403
    code = "derivative_of_another_account"


class ConfigurationError(ProvenanceError):
    """The operator's setup is wrong (missing key, unreachable RPC...)."""

    status_code = 500
    code = "configuration_error"


class ChainError(ProvenanceError):
    status_code = 502
    code = "chain_error"


class ChainUnavailableError(ChainError):
    """The chain node does not answer (connection refused, timeout): retry later."""

    status_code = 503
    code = "chain_unavailable"


class IpfsError(ProvenanceError):
    status_code = 502
    code = "ipfs_error"


class TimeStampError(ProvenanceError):
    """The RFC 3161 time-stamp authority did not answer: no manifest is signed without one."""

    status_code = 502
    code = "time_stamp_error"


class PromptRejectedError(InputError):
    status_code = 422
    code = "prompt_rejected"


class UnknownModelError(InputError):
    status_code = 422
    code = "unknown_model"


class QueueFullError(ProvenanceError):
    status_code = 429
    code = "queue_full"


class JobFinishedError(ProvenanceError):
    status_code = 409
    code = "job_finished"


class GenerationRequestError(InputError):
    status_code = 422
    code = "invalid_generation_request"


class InvalidAddressError(InputError):
    status_code = 422
    code = "invalid_address"


class NotRegisteredError(ProvenanceError):
    status_code = 409
    code = "not_registered"


class AlreadyMintedError(ProvenanceError):
    status_code = 409
    code = "already_minted"


class NftUnavailableError(ProvenanceError):
    status_code = 503
    code = "nft_unavailable"


class AuthenticationError(ProvenanceError):
    """No API key, or one that is unknown or revoked (401 with ``WWW-Authenticate: Bearer``)."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        # RFC 6750: a client that sent a bad token is told so; one that sent none just gets the scheme.
        challenge = 'Bearer realm="provenance"' + (', error="invalid_token"' if invalid_token else "")
        self.headers = {"WWW-Authenticate": challenge}


class PermissionDeniedError(ProvenanceError):
    """A valid key that may not do this: a missing scope, or another account's record."""

    status_code = 403
    code = "forbidden"


class RateLimitedError(ProvenanceError):
    """Too many requests in the current window; ``Retry-After`` says when to come back."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int, limit: int, extra: dict[str, object] | None = None) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}
        self.extra: dict[str, object] = {"retry_after_s": retry_after_s, "limit": limit, **(extra or {})}


class QuotaExceededError(RateLimitedError):
    """An account's daily quota (generated images, mints) is used up until it resets."""

    code = "quota_exceeded"


class DependencyUnavailableError(ProvenanceError):
    """A service this one depends on (Redis, the chain node...) does not answer."""

    status_code = 503
    code = "dependency_unavailable"


class ServerBusyError(ProvenanceError):
    """The pixel budget stayed full for as long as a request may wait (503 with ``Retry-After``)."""

    status_code = 503
    code = "busy"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after_s)}
        self.extra: dict[str, object] = {"retry_after_s": retry_after_s}


class StorageUnavailableError(ProvenanceError):
    """The database or the content store cannot be written (or read) right now: retry later."""

    status_code = 503
    code = "storage_unavailable"


_STORAGE_ERRNOS = {"EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EIO"}


def dependency_error(exc: BaseException) -> ProvenanceError | None:
    """The 503 that a raw exception from a dependency stands for, or None for anything else.

    The database (SQLAlchemy operational errors: read-only, locked, disk I/O, server gone), the data
    dir (a read-only, full or broken filesystem) and the chain RPC (web3 over ``requests``: refused,
    timed out) are faults to retry, not bugs: they answer 503 with a code that names the dependency.
    """
    import errno

    import requests
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (StorageUnavailableError, ChainUnavailableError, DependencyUnavailableError)):
        return exc
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InternalError, sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return StorageUnavailableError(f"The database cannot be written or read right now ({reason}); retry later.")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return ChainUnavailableError("The chain node does not answer; retry later.")
    if isinstance(exc, OSError) and errno.errorcode.get(exc.errno or 0) in _STORAGE_ERRNOS:
        return StorageUnavailableError(f"The data directory cannot be written right now ({exc.strerror}); retry later.")
    return None
