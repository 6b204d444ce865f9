"""A client-side rate limit: a token bucket shared by every request of one client.

Easemob counts requests per second per app key and answers 429 above the quota; pacing our
own requests keeps a busy worker from burning its retries on throttling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """At most ``rate`` acquisitions per second on average, ``burst`` at once.

    Waiters are served in arrival order: the lock is held while one waiter sleeps for its
    token, so later callers queue behind it instead of racing for the next one.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await self._sleep((1.0 - self._tokens) / self.rate)
                self._refill()
            self._tokens -= 1.0

    async def close(self) -> None:
        """Nothing to release (the shared limiter's counterpart closes its connection)."""
