"""Every error the service raises on purpose, in one place.

Each says what went wrong: a stable machine-readable ``code``, a message that tells the user what
to do, and what a client can act on (``retry_after_s``, ``extra`` fields such as a record id;
``transient`` when a dependency may come back). None of them knows HTTP: the API maps each class
to a status code and headers (``provenance/api/errors.py``) and answers
``{"error": code, "detail": message, **extra}``; the CLI prints the message on one line.
"""

from __future__ import annotations

from typing import ClassVar


class ProvenanceError(Exception):
    """Base class: something the caller or operator can act on."""

    code = "internal_error"
    # A fault of a dependency that may pass (storage, the chain node, a full server): retrying later may work.
    transient: ClassVar[bool] = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s: int | None = None  # when a retry may succeed, in seconds
        self.extra: dict[str, object] = {}  # machine-readable fields a client can act on


class InputError(ProvenanceError):
    """The request itself is wrong (a missing field, a bad value): fix it and send it again."""

    code = "bad_request"


class UnsupportedMediaError(InputError):
    """The upload is not a PNG, JPEG or WebP image."""

    code = "unsupported_media_type"


class PayloadTooLargeError(InputError):
    """The upload has more bytes than the limit."""

    code = "payload_too_large"


class TooManyPixelsError(InputError):
    """The image has more pixels (or a longer side) than the limit."""

    code = "too_many_pixels"


class CorruptImageError(InputError):
    """The upload claims an image format and does not decode as one."""

    code = "corrupt_image"


class MetadataTooLargeError(InputError):
    """More text, EXIF, XMP or ICC data (bytes or chunks) than an upload may carry; refused before parsing."""

    code = "metadata_too_large"


class ImageTooComplexError(InputError):
    """A container no real encoder writes (tens of thousands of chunks, hundreds of JPEG scans)."""

    code = "image_too_complex"


class InvalidSourceTypeError(InputError):
    """A source type that is not one of the IPTC digital source types."""

    code = "invalid_source_type"


class NotFoundError(ProvenanceError):
    """No record, job, key, CID or difference image by that name."""

    code = "not_found"


class AlreadyCertifiedError(ProvenanceError):
    """The content belongs to another account's record (``record_id`` names it)."""

    code = "already_certified"

    def __init__(self, detail: str, *, record_id: str | None = None) -> None:
        super().__init__(detail)
        self.record_id = record_id
        if record_id:
            self.extra = {"record_id": record_id}


class DerivativeError(ProvenanceError):
    """A declared derivative whose source is not a record of this service."""

    code = "invalid_derivative"


class DerivativeNotMintableError(ProvenanceError):
    """Minting a derivative of another account's record: the token would sell their work."""

    code = "derivative_of_another_account"


class ConfigurationError(ProvenanceError):
    """The operator's setup is wrong (missing key, unreachable RPC...)."""

    code = "configuration_error"


class ChainError(ProvenanceError):
    """The chain node answered with an error (a refused or failed transaction, a bad reply)."""

    code = "chain_error"


class ChainUnavailableError(ChainError):
    """The chain node does not answer (connection refused, timeout): retry later."""

    code = "chain_unavailable"
    transient = True


class IpfsError(ProvenanceError):
    """The content store failed to add, pin or read content."""

    code = "ipfs_error"


class TimeStampError(ProvenanceError):
    """The RFC 3161 time-stamp authority did not answer: no manifest is signed without one."""

    code = "time_stamp_error"


class PromptRejectedError(InputError):
    """A prompt the generator refuses to run."""

    code = "prompt_rejected"


class UnknownModelError(InputError):
    """A generation request names a model this service does not serve."""

    code = "unknown_model"


class UnregisteredModelError(UnknownModelError):
    """PROVENANCE_REQUIRE_REGISTERED_MODELS is on and a model's or LoRA's files match no registered, signed model."""

    code = "unregistered_model"


class QueueFullError(ProvenanceError):
    """The generation queue holds as many jobs as it may: retry later."""

    code = "queue_full"


class JobFinishedError(ProvenanceError):
    """A job that already finished (or failed, or was cancelled) cannot be cancelled."""

    code = "job_finished"


class GenerationRequestError(InputError):
    """A generation request whose values do not fit together (size, steps, images)."""

    code = "invalid_generation_request"


class InvalidAddressError(InputError):
    """Not an Ethereum address that may receive a token (bad checksum, zero address)."""

    code = "invalid_address"


class NotRegisteredError(ProvenanceError):
    """A record that is not registered on the chain yet cannot be minted."""

    code = "not_registered"


class AlreadyMintedError(ProvenanceError):
    """A token for this content hash exists already."""

    code = "already_minted"


class NftUnavailableError(ProvenanceError):
    """Minting cannot be done now (no NFT contract, or its chain does not answer)."""

    code = "nft_unavailable"
    transient = True


class AuthenticationError(ProvenanceError):
    """No API key, or one that is unknown or revoked (``invalid_token``: a key was sent and is wrong)."""

    code = "unauthorized"

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.invalid_token = invalid_token  # a key was sent and is wrong (not merely missing)


class PermissionDeniedError(ProvenanceError):
    """A valid key that may not do this: a missing scope, or another account's record."""

    code = "forbidden"


class RateLimitedError(ProvenanceError):
    """Too many requests in the current window; ``retry_after_s`` says when to come back."""

    code = "rate_limited"

    def __init__(self, detail: str, *, retry_after_s: int, limit: int, extra: dict[str, object] | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.extra = {"retry_after_s": retry_after_s, "limit": limit, **(extra or {})}


class QuotaExceededError(RateLimitedError):
    """An account's daily quota (generated images, mints) is used up until it resets."""

    code = "quota_exceeded"


class DependencyUnavailableError(ProvenanceError):
    """A service this one depends on (Redis, the chain node...) does not answer."""

    code = "dependency_unavailable"
    transient = True


class ServerBusyError(ProvenanceError):
    """The pixel budget stayed full for as long as a request may wait (``retry_after_s`` says when to retry)."""

    code = "busy"
    transient = True

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.extra = {"retry_after_s": retry_after_s}


class StorageUnavailableError(ProvenanceError):
    """The database or the content store cannot be written (or read) right now: retry later."""

    code = "storage_unavailable"
    transient = True


_STORAGE_ERRNOS = {"EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EIO"}


def dependency_error(exc: BaseException) -> ProvenanceError | None:
    """The transient error that a raw exception from a dependency stands for, or None for anything else.

    The database (SQLAlchemy operational errors: read-only, locked, disk I/O, server gone), the data
    dir (a read-only, full or broken filesystem) and the chain RPC (web3 over ``requests``: refused,
    timed out) are faults to retry, not bugs: the error names the dependency (the API answers 503).
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
