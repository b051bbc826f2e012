"""Per-Telegram-user rate limit: a sliding window of one minute."""

from __future__ import annotations

import time
from collections import deque


class RateLimiter:
    """At most ``per_min`` messages a user in any 60 s; 0: unlimited."""

    def __init__(self, per_min: int) -> None:
        self.per_min = per_min
        self._seen: dict[int, deque[float]] = {}
        self._told: dict[int, float] = {}

    def hit(self, user_id: int) -> float:
        """Count one message; 0.0 when allowed, else the seconds until the next one is."""
        if self.per_min <= 0:
            return 0.0
        now = time.monotonic()
        window = self._seen.setdefault(user_id, deque())
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_min:
            return max(0.1, 60.0 - (now - window[0]))
        window.append(now)
        return 0.0

    def should_tell(self, user_id: int, wait: float) -> bool:
        """Say "slow down" once per window, so a flood gets one answer, not one per message."""
        now = time.monotonic()
        if self._told.get(user_id, 0.0) > now:
            return False
        self._told[user_id] = now + wait
        return True
