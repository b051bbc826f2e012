"""Accounts, API keys, scopes, rate limits and quotas.

Writes (certify, generate, mint) need ``Authorization: Bearer pvk_...`` with the matching scope;
reads stay public. ``provenance apikey create`` makes keys; the first start writes an admin key to
``<data_dir>/admin.key``.
"""

from provenance.auth.accounts import AccountRepository, Caller, KeyInfo
from provenance.auth.bootstrap import ADMIN_KEY_FILE, bootstrap_admin
from provenance.auth.keys import SCOPES
from provenance.auth.limits import CERTIFY_PER_DAY, IMAGES_PER_DAY, MINTS_PER_DAY, Limits
from provenance.auth.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, open_limiter

__all__ = [
    "ADMIN_KEY_FILE",
    "CERTIFY_PER_DAY",
    "IMAGES_PER_DAY",
    "MINTS_PER_DAY",
    "SCOPES",
    "AccountRepository",
    "Caller",
    "KeyInfo",
    "Limits",
    "MemoryRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "bootstrap_admin",
    "open_limiter",
]
