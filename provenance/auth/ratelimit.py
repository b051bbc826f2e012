"""``RateLimiter``: fixed-window counters for request rates and daily quotas.

Windows are aligned to the epoch (minutes start at :00, days at 00:00 UTC), so every instance
agrees on when a window resets without talking to the others, and a quota "per day" is a UTC day.
A hit that would pass the limit is refused and not counted, so a large request refused near the
end of a quota does not eat what is left. A fixed window allows up to twice the limit across a
window boundary; for abuse protection and daily budgets that is an acceptable price for one
counter per window.

Three implementations: ``MemoryRateLimiter`` (one process, thread-safe), ``SqliteRateLimiter`` (the
worker processes of one ``provenance serve --workers N`` without Redis: a SQLite file in the data dir,
one ``BEGIN IMMEDIATE`` transaction per hit) and ``RedisRateLimiter`` (shared by every API instance
that uses the same Redis: one atomic Lua script per hit).
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import redis

from provenance.errors import DependencyUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    """The outcome of one hit; ``window_key`` identifies the counter for a later refund."""

    allowed: bool
    limit: int
    used: int
    reset_at: float  # epoch seconds when the window ends
    window_key: str

    @property
    def remaining(self) -> int:
        """What is left in the window."""
        return max(0, self.limit - self.used)

    @property
    def retry_after_s(self) -> int:
        """Seconds until the window ends (at least 1)."""
        return max(1, math.ceil(self.reset_at - time.time()))


class RateLimiter(ABC):
    """Counts hits per bucket in fixed windows of ``window_s`` seconds."""

    @abstractmethod
    def hit(self, bucket: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        """Add ``cost`` to the bucket's current window unless that would pass ``limit``."""

    @abstractmethod
    def refund(self, decision: Decision, cost: int = 1) -> None:
        """Give back what an allowed hit counted (the work it paid for did not happen)."""

    def close(self) -> None:  # noqa: B027 - optional for implementations without resources
        """Release connections."""

    @staticmethod
    def _window(bucket: str, window_s: int, now: float) -> tuple[str, float]:
        index = int(now // window_s)
        return f"{bucket}:{window_s}:{index}", (index + 1) * window_s


class MemoryRateLimiter(RateLimiter):
    """Counters in this process, under one lock."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # window key -> (count, window end)
        self._lock = threading.Lock()
        self._next_purge = 0.0

    def hit(self, bucket: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        """Add ``cost`` to the bucket's current window unless that would pass ``limit``."""
        now = time.time()
        key, reset_at = self._window(bucket, window_s, now)
        with self._lock:
            if now >= self._next_purge:  # drop finished windows now and then, so memory stays bounded
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                self._next_purge = now + 60
            used = self._counts.get(key, (0, reset_at))[0]
            if used + cost > limit:
                return Decision(False, limit, used, reset_at, key)
            self._counts[key] = (used + cost, reset_at)
            return Decision(True, limit, used + cost, reset_at, key)

    def refund(self, decision: Decision, cost: int = 1) -> None:
        """Give back what an allowed hit counted."""
        with self._lock:
            used, reset_at = self._counts.get(decision.window_key, (0, decision.reset_at))
            if used:
                self._counts[decision.window_key] = (max(0, used - cost), reset_at)


# Check and increment in one step: two instances can never both take the last unit.
_HIT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost > tonumber(ARGV[2]) then
  return {0, used}
end
used = redis.call('INCRBY', KEYS[1], cost)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, used}
"""
_REFUND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used <= 0 then return 0 end
return redis.call('DECRBY', KEYS[1], math.min(used, tonumber(ARGV[1])))
"""


class RedisRateLimiter(RateLimiter):
    """Counters in Redis, shared by every instance.

    If Redis is unreachable, per-minute rate limits let requests through (logged): a counter outage
    should not take verification down with it. Quotas (``quota:`` buckets) protect the operator's
    money and GPUs, so they fail closed: the request gets a 503 that names the fault.
    """

    def __init__(self, url: str, *, prefix: str = "provenance:ratelimit:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._hit = self._redis.register_script(_HIT)
        self._refund = self._redis.register_script(_REFUND)
        self._last_warning = 0.0

    def hit(self, bucket: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        """Add ``cost`` to the bucket's current window unless that would pass ``limit``."""
        now = time.time()
        key, reset_at = self._window(self.prefix + bucket, window_s, now)
        try:
            allowed, used = self._hit(keys=[key], args=[cost, limit, int(reset_at) + 1])
        except redis.RedisError as exc:
            self._warn(exc)
            if bucket.startswith("quota:"):
                raise DependencyUnavailableError(
                    f"Quotas cannot be checked: Redis at {self.url} does not answer ({exc}). Retry later."
                ) from None
            return Decision(True, limit, 0, reset_at, key)
        return Decision(bool(allowed), limit, int(used), reset_at, key)

    def refund(self, decision: Decision, cost: int = 1) -> None:
        """Give back what an allowed hit counted."""
        try:
            self._refund(keys=[decision.window_key], args=[cost])
        except redis.RedisError as exc:
            self._warn(exc)

    def close(self) -> None:
        """Close the Redis connection pool."""
        self._redis.close()

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._last_warning > 30:
            self._last_warning = time.monotonic()
            log.warning("rate limits and quotas are not enforced: Redis at %s failed: %s", self.url, exc)


class SqliteRateLimiter(RateLimiter):
    """Counters in a SQLite file, shared by every process on this machine that opens the same file.

    For several worker processes without Redis: a per-process counter would let a client that reaches
    several workers pass the limit N times, and dividing the limit by N would refuse a client whose
    keep-alive connection stays on one worker. Each hit is one short write transaction
    (``BEGIN IMMEDIATE``: check and increment happen under SQLite's write lock, so two processes never
    both take the last unit). The counts are not worth an fsync: ``synchronous=OFF``. A database
    error fails like Redis does: rate limits open (logged), quotas closed (503).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, serialised by a thread lock; the other processes are kept out by SQLite's lock.
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._next_purge = 0.0
        self._last_warning = 0.0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS windows "
                "(key TEXT PRIMARY KEY, used INTEGER NOT NULL, reset_at REAL NOT NULL)"
            )

    def hit(self, bucket: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        """Add ``cost`` to the bucket's current window unless that would pass ``limit``."""
        now = time.time()
        key, reset_at = self._window(bucket, window_s, now)
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    if now >= self._next_purge:  # finished windows go now and then, so the file stays small
                        self._db.execute("DELETE FROM windows WHERE reset_at <= ?", (now,))
                        self._next_purge = now + 60
                    row = self._db.execute("SELECT used FROM windows WHERE key = ?", (key,)).fetchone()
                    used = int(row[0]) if row else 0
                    allowed = used + cost <= limit
                    if allowed:
                        used += cost
                        self._db.execute(
                            "INSERT INTO windows (key, used, reset_at) VALUES (?, ?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET used = excluded.used",
                            (key, used, reset_at),
                        )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            self._warn(exc)
            if bucket.startswith("quota:"):
                raise DependencyUnavailableError(
                    f"Quotas cannot be checked: the counter file {self.path} fails ({exc}). Retry later."
                ) from None
            return Decision(True, limit, 0, reset_at, key)
        return Decision(allowed, limit, used, reset_at, key)

    def refund(self, decision: Decision, cost: int = 1) -> None:
        """Give back what an allowed hit counted."""
        try:
            with self._lock:
                self._db.execute(
                    "UPDATE windows SET used = MAX(0, used - ?) WHERE key = ?", (cost, decision.window_key)
                )
        except sqlite3.Error as exc:
            self._warn(exc)

    def close(self) -> None:
        """Close the SQLite connection."""
        with self._lock:
            self._db.close()

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._last_warning > 30:
            self._last_warning = time.monotonic()
            log.warning("rate limits and quotas are not enforced: the counter file %s failed: %s", self.path, exc)


def open_limiter(redis_url: str | None, shared_file: Path | None = None) -> RateLimiter:
    """Redis when REDIS_URL is set (several instances share the counts); else ``shared_file`` when given
    (the worker processes of one machine share it); else this process."""
    if redis_url:
        return RedisRateLimiter(redis_url)
    if shared_file is not None:
        return SqliteRateLimiter(shared_file)
    return MemoryRateLimiter()
