"""The operator's policy on top of ``RateLimiter``: request rates per key or address, daily quotas."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from provenance.auth.accounts import Caller
from provenance.auth.ratelimit import Decision, RateLimiter
from provenance.config import Settings
from provenance.errors import QuotaExceededError, RateLimitedError

DAY_S = 24 * 3600


@dataclass(frozen=True)
class Quota:
    name: str  # as the 429 body names it
    setting: str  # the Settings field with the limit
    unit: str


IMAGES_PER_DAY = Quota("images_per_day", "quota_images_per_day", "generated images")
MINTS_PER_DAY = Quota("mints_per_day", "quota_mints_per_day", "mints and vouchers")


class Limits:
    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
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
