"""The operator's policy on top of ``RateLimiter``: request rates per key or address, daily quotas, and
the pixels public verification may decode per minute."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from provenance.auth.accounts import Caller
from provenance.auth.ratelimit import Decision, RateLimiter
from provenance.errors import QuotaExceededError, RateLimitedError, ServerBusyError

DAY_S = 24 * 3600


@dataclass(frozen=True)
class Quota:
    """A daily quota: its name, the setting that holds its limit, and what it counts."""

    name: str  # as the 429 body names it
    setting: str  # the Settings field with the limit
    unit: str


IMAGES_PER_DAY = Quota("images_per_day", "quota_images_per_day", "generated images")
MINTS_PER_DAY = Quota("mints_per_day", "quota_mints_per_day", "mints and vouchers")
CERTIFY_PER_DAY = Quota("certify_per_day", "quota_certify_per_day", "certified images")


class LimitValues(Protocol):
    """The limits ``Limits`` reads (``Settings`` has them; a test can pass any object that has them)."""

    rate_limit_per_key_per_min: int
    rate_limit_public_per_min: int
    verify_key_pixels_per_min: int
    verify_pixels_per_min: int
    quota_images_per_day: int
    quota_mints_per_day: int
    quota_certify_per_day: int


class Limits:
    """Per-account rate limits and daily quotas, with the limits from the settings."""

    def __init__(self, settings: LimitValues, limiter: RateLimiter) -> None:
        self.settings = settings
        self.limiter = limiter

    def check_request(self, caller: Caller | None, client: str) -> Decision | None:
        """Count one request against its key (its own rate, else the default) or, without a key,
        against the client address. None when unlimited; RateLimitedError (429) when over."""
        if caller is not None:
            limit = self.settings.rate_limit_per_key_per_min if caller.rate_per_min is None else caller.rate_per_min
            bucket, who = f"key:{caller.key_id}", f"API key {caller.key_id}"
        else:
            limit, bucket, who = self.settings.rate_limit_public_per_min, f"ip:{client}", "this address"
        if limit <= 0:
            return None
        decision = self.limiter.hit(bucket, limit, 60)
        if not decision.allowed:
            raise RateLimitedError(
                f"Rate limit of {limit} requests per minute for {who} reached; retry in {decision.retry_after_s} s.",
                retry_after_s=decision.retry_after_s,
                limit=limit,
            )
        return decision

    @contextlib.contextmanager
    def quota(self, caller: Caller, quota: Quota, cost: int = 1) -> Iterator[None]:
        """Charge ``cost`` to the caller's account for the block; a block that raises is refunded
        (a refused or failed request costs nothing). Admin keys are the operator's: not charged."""
        limit = int(getattr(self.settings, quota.setting))
        if caller.is_admin or limit <= 0:
            yield
            return
        decision = self.limiter.hit(f"quota:{quota.name}:{caller.account_id}", limit, DAY_S, cost)
        if not decision.allowed:
            resets = dt.datetime.fromtimestamp(decision.reset_at, dt.UTC).isoformat().replace("+00:00", "Z")
            raise QuotaExceededError(
                f"Daily quota {quota.name} reached: {decision.used} of {limit} {quota.unit} used today, "
                f"this request needs {cost}; it resets at {resets}.",
                retry_after_s=decision.retry_after_s,
                limit=limit,
                extra={"quota": quota.name, "used": decision.used, "requested": cost, "resets_at": resets},
            )
        try:
            yield
        except BaseException:
            self.limiter.refund(decision, cost)
            raise

    @contextlib.contextmanager
    def verify_cost(self, caller: Caller | None, client: str, pixels: int) -> Iterator[None]:
        """Charge an upload's pixels (from its header, before decoding) to the per-minute verify budget.

        Without a key (or with a key lacking the 'verify' scope) the client address pays
        (``verify_pixels_per_min``); a key with the 'verify' scope pays on its own
        (``verify_key_pixels_per_min``); admin keys are the operator's and are not counted. An image larger
        than a whole minute's budget costs the whole budget, so it can still be verified, alone. A block
        that raises ``ServerBusyError`` (refused before decoding) is refunded. RateLimitedError (429) when spent.
        """
        if caller is not None and caller.is_admin:
            yield
            return
        if caller is not None and caller.has("verify"):
            limit = self.settings.verify_key_pixels_per_min
            bucket, who = f"verify_pixels:key:{caller.key_id}", f"API key {caller.key_id}"
        else:
            limit, bucket, who = self.settings.verify_pixels_per_min, f"verify_pixels:ip:{client}", "this address"
        if limit <= 0:
            yield
            return
        cost = max(1, min(int(pixels), limit))
        decision = self.limiter.hit(bucket, limit, 60, cost)
        if not decision.allowed:
            raise RateLimitedError(
                f"Verification budget of {limit:,} pixels per minute for {who} spent ({decision.used:,} used, this "
                f"image needs {cost:,}); retry in {decision.retry_after_s} s.",
                retry_after_s=decision.retry_after_s,
                limit=limit,
                extra={"budget": "verify_pixels_per_min", "used": decision.used, "requested": cost},
            )
        try:
            yield
        except ServerBusyError:
            self.limiter.refund(decision, cost)
            raise
