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


class InvalidSourceTypeError(InputError):
    status_code = 422
    code = "invalid_source_type"


class NotFoundError(ProvenanceError):
    status_code = 404
    code = "not_found"


class AlreadyCertifiedError(ProvenanceError):
    status_code = 409
    code = "already_certified"


class ConfigurationError(ProvenanceError):
    """The operator's setup is wrong (missing key, unreachable RPC...)."""

    status_code = 500
    code = "configuration_error"


class ChainError(ProvenanceError):
    status_code = 502
    code = "chain_error"


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
