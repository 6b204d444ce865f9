"""The client-side rate limit: a token bucket that paces requests without real sleeps."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from callback_sink.easemob.ratelimit import RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_burst_goes_at_once_and_the_rest_at_the_configured_rate() -> None:
    time = FakeTime()
    limiter = RateLimiter(100, clock=time.clock, sleep=time.sleep)
    for _ in range(100):
        await limiter.acquire()
    assert time.now == 0.0
    for _ in range(50):
        await limiter.acquire()
    assert time.now == pytest.approx(0.5)


async def test_concurrent_callers_never_exceed_the_rate() -> None:
    time = FakeTime()
    limiter = RateLimiter(10, burst=1, clock=time.clock, sleep=time.sleep)
    stamps: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        stamps.append(time.now)

    await asyncio.gather(*(call() for _ in range(21)))
    assert stamps[-1] == pytest.approx(2.0)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) == pytest.approx(0.1)


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
