"""``SqliteRateLimiter``: the counter file the worker processes of one machine share when there is no Redis."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from provenance.auth.ratelimit import SqliteRateLimiter, open_limiter
from provenance.errors import DependencyUnavailableError


def _take(path: str, hits: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    limiter = SqliteRateLimiter(Path(path))
    out.put(sum(limiter.hit("key:k", 50, 3600).allowed for _ in range(hits)))
    limiter.close()


def test_two_processes_share_one_limit(tmp_path: Path) -> None:
    """Four processes hit one bucket 30 times each: exactly the limit (50) is allowed in all, never more."""
    path = tmp_path / "ratelimit.db"
    SqliteRateLimiter(path).close()  # the schema, before the processes race
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=_take, args=(str(path), 30, out)) for _ in range(4)]
    for process in processes:
        process.start()
    allowed = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sum(allowed) == 50, allowed


def test_refused_hits_are_not_counted_and_refunds_give_back(tmp_path: Path) -> None:
    first, second = SqliteRateLimiter(tmp_path / "r.db"), SqliteRateLimiter(tmp_path / "r.db")
    granted = first.hit("quota:images:a", 10, 86400, cost=8)
    assert granted.allowed and granted.remaining == 2
    refused = second.hit("quota:images:a", 10, 86400, cost=3)
    assert not refused.allowed and refused.used == 8  # the refused 3 were not counted
    first.refund(granted, cost=8)
    assert second.hit("quota:images:a", 10, 86400, cost=10).allowed
    first.close()
    second.close()


def test_a_broken_counter_file_fails_quotas_closed_and_rates_open(tmp_path: Path) -> None:
    limiter = SqliteRateLimiter(tmp_path / "r.db")
    limiter._db.execute("DROP TABLE windows")  # the file no longer holds the counters
    assert limiter.hit("key:k", 1, 60).allowed  # a rate limit lets the request through (logged)
    with pytest.raises(DependencyUnavailableError):
        limiter.hit("quota:images:a", 1, 86400)
    limiter.close()


def test_open_limiter_prefers_redis_then_the_shared_file(tmp_path: Path) -> None:
    shared, own = open_limiter(None, tmp_path / "r.db"), open_limiter(None)
    assert isinstance(shared, SqliteRateLimiter) and not isinstance(own, SqliteRateLimiter)
    shared.close()
