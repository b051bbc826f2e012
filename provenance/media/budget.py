"""A process-wide pixel budget: how many pixels may be decoded and worked on at once.

Decoding, marking and reading an image cost memory in proportion to its pixel count (about 17 bytes
per pixel at the peak of a certification or a verification, see ``make bench-memory``). Requests
take their pixel count from the budget before they decode anything and give it back when they are
done, so however many uploads arrive together, the pixels in flight never exceed the budget.

A request waits (first come, first served) up to ``wait_s`` for room; after that, or at once when
``max_waiting`` requests are already in line, it is refused with 503 ``busy`` and a ``Retry-After``.
An image larger than the whole budget is not refused for that: it runs alone, taking the whole budget.

Two rules keep one client, or a few large images, from taking the budget from everyone else:

- ``client_share``: one client (an account, a key or an address) holds at most this share of the budget at
  once (a client holding nothing may always start one image). A request waiting only for its own client's
  share does not hold up the line behind it, and a client may have only a quarter of ``max_waiting`` in line.
- ``small_reserve``: this share of the budget is kept for small images (at most that many pixels each): a
  normal upload takes it, out of turn, instead of waiting behind large images for the rest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from provenance.errors import ServerBusyError
from provenance.observability import metrics


def _malloc_trim() -> None:
    """Hand freed heap memory back to the system (glibc). Worker threads each get a malloc arena that keeps
    what a large image freed; trimming after each image keeps the idle RSS where it was (no-op elsewhere)."""
    if _libc is not None:
        _libc.malloc_trim(0)


_libc_name = ctypes.util.find_library("c")
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(_libc_name) if _libc_name else None
    if _libc is not None and not hasattr(_libc, "malloc_trim"):
        _libc = None
except OSError:  # pragma: no cover - no C library to load
    _libc = None


class Grant(int):
    """What ``acquire`` took (an int, the pixels) that also remembers the client and the lane, for ``release``."""

    client: str | None
    fast: bool

    def __new__(cls, cost: int, client: str | None = None, fast: bool = False) -> Grant:
        grant = super().__new__(cls, cost)
        grant.client, grant.fast = client, fast
        return grant


@dataclass(eq=False)
class _Waiter:
    cost: int
    client: str | None


class PixelBudget:
    """A weighted semaphore over pixels, fair (FIFO) so a large image is not starved by small ones."""

    def __init__(
        self,
        pixels: int,
        *,
        wait_s: float = 60.0,
        max_waiting: int = 16,
        retry_after_s: int | None = None,
        client_share: float = 1.0,
        small_reserve: float = 0.0,
    ) -> None:
        if pixels <= 0:
            raise ValueError("the pixel budget must be positive")
        if not 0 < client_share <= 1 or not 0 <= small_reserve < 1:
            raise ValueError("client_share must be in (0, 1] and small_reserve in [0, 1)")
        self.capacity = int(pixels)
        self.wait_s = float(wait_s)
        # Waiting requests hold a worker thread each: beyond this many in line, refuse at once.
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.client_cap = max(1, int(self.capacity * client_share))
        self.client_max_waiting = max_waiting if client_share >= 1 else max(1, max_waiting // 4)
        self.small_pixels = int(self.capacity * small_reserve)  # the small-image lane; the rest is the main lane
        self._main_used = 0
        self._fast_used = 0
        self._held: dict[str, int] = {}  # client -> pixels held
        self._cond = threading.Condition()
        self._queue: deque[_Waiter] = deque()  # waiting requests, oldest first
        self.peak_in_use = 0  # the most pixels ever held at once (benchmarks and tests read it)
        metrics.PIXEL_BUDGET.set(self.capacity)

    @property
    def in_use(self) -> int:
        """Pixels held now, both lanes together."""
        with self._cond:
            return self._main_used + self._fast_used

    def _cost(self, pixels: int) -> int:
        return max(1, min(int(pixels), self.capacity))

    def _client_ok(self, waiter: _Waiter) -> bool:
        if waiter.client is None:
            return True
        held = self._held.get(waiter.client, 0)
        return held == 0 or held + waiter.cost <= self.client_cap

    def _lane(self, waiter: _Waiter) -> str | None:
        """ "main" or "fast" when the waiter may take its pixels now, else None (under the lock)."""
        if not self._client_ok(waiter):
            return None
        used = self._main_used + self._fast_used
        ahead = list(itertools.takewhile(lambda other: other is not waiter, self._queue))
        # Earlier requests keep their turn, unless only their own client's share holds them back.
        if not any(self._client_ok(other) for other in ahead):
            main_room = self.capacity - self.small_pixels - self._main_used
            alone = self._main_used == 0 and used + waiter.cost <= self.capacity  # larger than the main lane
            if waiter.cost <= main_room or alone:
                return "main"
        # A small image may take the reserved lane out of turn; only earlier small ones go before it there.
        fits_fast = self._fast_used + waiter.cost <= self.small_pixels and used + waiter.cost <= self.capacity
        if fits_fast and not any(other.cost <= self.small_pixels and self._client_ok(other) for other in ahead):
            return "fast"
        return None

    def _busy(self, message: str, wait: float) -> ServerBusyError:
        return ServerBusyError(message, retry_after_s=self.retry_after_s or max(1, math.ceil(wait)))

    def acquire(self, pixels: int, *, timeout_s: float | None = None, client: str | None = None) -> Grant:
        """Take ``pixels`` (at most the whole budget) for ``client``; returns what was taken, for ``release``.

        Raises ``ServerBusyError`` when no room was made within ``timeout_s`` (default ``wait_s``), or at once
        when the line (or this client's part of it) is full.
        """
        waiter = _Waiter(self._cost(pixels), client)
        wait = self.wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        with self._cond:
            self._queue.append(waiter)
            try:
                lane = self._lane(waiter)
                if lane is None:
                    mine = sum(1 for other in self._queue if client is not None and other.client == client)
                    if len(self._queue) > self.max_waiting:
                        raise self._busy(
                            f"{len(self._queue) - 1} images are already waiting for the server's "
                            f"{self.capacity:,}-pixel budget; retry later.",
                            wait,
                        )
                    if mine > self.client_max_waiting:
                        raise self._busy(
                            f"{mine - 1} images from this client are already waiting for the server's pixel "
                            "budget; retry later.",
                            wait,
                        )
                while lane is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._busy(
                            f"The server is working on other images ({self._main_used + self._fast_used:,} of its "
                            f"{self.capacity:,}-pixel budget in use) and this one ({int(pixels):,} pixels) "
                            f"waited {wait:g} s for room; retry later.",
                            wait,
                        )
                    self._cond.wait(remaining)
                    lane = self._lane(waiter)
                if lane == "fast":
                    self._fast_used += waiter.cost
                else:
                    self._main_used += waiter.cost
                if client is not None:
                    self._held[client] = self._held.get(client, 0) + waiter.cost
                self.peak_in_use = max(self.peak_in_use, self._main_used + self._fast_used)
            finally:
                self._queue.remove(waiter)
                self._cond.notify_all()  # the next in line may fit now, or may now be first
        return Grant(waiter.cost, client, lane == "fast")

    def release(self, cost: int) -> None:
        """Give back what ``acquire`` granted (a ``Grant``, or a plain pixel count) and wake the next waiter."""
        client, fast = (cost.client, cost.fast) if isinstance(cost, Grant) else (None, False)
        with self._cond:
            if fast:
                self._fast_used = max(0, self._fast_used - int(cost))
            else:
                self._main_used = max(0, self._main_used - int(cost))
            if client is not None:
                left = self._held.get(client, 0) - int(cost)
                if left > 0:
                    self._held[client] = left
                else:
                    self._held.pop(client, None)
            self._cond.notify_all()
        _malloc_trim()

    @contextmanager
    def reserve(self, pixels: int, *, timeout_s: float | None = None, client: str | None = None) -> Iterator[int]:
        """``with budget.reserve(width * height, client=...): ...`` holds the pixels for the block."""
        cost = self.acquire(pixels, timeout_s=timeout_s, client=client)
        metrics.PIXELS_IN_USE.inc(int(cost))
        try:
            yield cost
        finally:
            self.release(cost)
            metrics.PIXELS_IN_USE.dec(int(cost))
