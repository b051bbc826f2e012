"""A process-wide pixel budget: how many pixels may be decoded and worked on at once.

Decoding, marking and reading an image cost memory in proportion to its pixel count (about 17 bytes
per pixel at the peak of a certification or a verification, see ``make bench-memory``). Requests
take their pixel count from the budget before they decode anything and give it back when they are
done, so however many uploads arrive together, the pixels in flight never exceed the budget.

A request waits (first come, first served) up to ``wait_s`` for room; after that, or at once when
``max_waiting`` requests are already in line, it is refused with 503 ``busy`` and a ``Retry-After``.
An image larger than the whole budget is not refused for that: it runs alone, taking the whole budget.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from provenance.errors import ServerBusyError


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


class PixelBudget:
    """A weighted semaphore over pixels, fair (FIFO) so a large image is not starved by small ones."""

    def __init__(
        self, pixels: int, *, wait_s: float = 60.0, max_waiting: int = 16, retry_after_s: int | None = None
    ) -> None:
        if pixels <= 0:
            raise ValueError("the pixel budget must be positive")
        self.capacity = int(pixels)
        self.wait_s = float(wait_s)
        # Waiting requests hold a worker thread each: beyond this many in line, refuse at once.
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._available = self.capacity
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()  # tickets of waiting requests, oldest first
        self.peak_in_use = 0  # the most pixels ever held at once (benchmarks and tests read it)

    @property
    def in_use(self) -> int:
        with self._cond:
            return self.capacity - self._available

    def _cost(self, pixels: int) -> int:
        return max(1, min(int(pixels), self.capacity))

    def acquire(self, pixels: int, *, timeout_s: float | None = None) -> int:
        """Take ``pixels`` (at most the whole budget); returns what was taken, to pass to ``release``.

        Raises ``ServerBusyError`` when no room was made within ``timeout_s`` (default ``wait_s``).
        """
        cost = self._cost(pixels)
        wait = self.wait_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + wait
        ticket = object()
        with self._cond:
            if len(self._queue) >= self.max_waiting and (self._queue or self._available < cost):
                raise ServerBusyError(
                    f"{len(self._queue)} images are already waiting for the server's {self.capacity:,}-pixel "
                    "budget; retry later.",
                    retry_after_s=self.retry_after_s or max(1, math.ceil(wait)),
                )
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._available < cost:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise ServerBusyError(
                            f"The server is working on other images ({self.capacity - self._available:,} of its "
                            f"{self.capacity:,}-pixel budget in use) and this one ({int(pixels):,} pixels) "
                            f"waited {wait:g} s for room; retry later.",
                            retry_after_s=self.retry_after_s or max(1, math.ceil(wait)),
                        )
                    self._cond.wait(remaining)
                self._available -= cost
                self.peak_in_use = max(self.peak_in_use, self.capacity - self._available)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now, or may now be first
        return cost

    def release(self, cost: int) -> None:
        with self._cond:
            self._available = min(self.capacity, self._available + cost)
            self._cond.notify_all()
        _malloc_trim()

    @contextmanager
    def reserve(self, pixels: int, *, timeout_s: float | None = None) -> Iterator[int]:
        """``with budget.reserve(width * height): ...`` holds the pixels for the block."""
        cost = self.acquire(pixels, timeout_s=timeout_s)
        try:
            yield cost
        finally:
            self.release(cost)
