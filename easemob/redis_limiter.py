"""One REST quota for every process: a token bucket in Redis, spent through a Lua script.

Easemob's rate limit is per app key, not per process: N workers pacing themselves separately
send N times the quota and collect 429s. When ``SINK_DEDUP_URL`` is Redis, every REST client
of one app (each worker's, ``backfill``'s) takes its tokens from one bucket there, keyed by
``{SINK_TOPOLOGY_PREFIX}:easemob-quota:{org}#{app}``; otherwise each process paces itself
(:class:`~easemob.ratelimit.RateLimiter`).

The script *reserves*: it always takes a token, letting the bucket go negative, and answers
how long the caller must wait for it. Callers are served in the order Redis saw them, each in
one round trip, and the bucket's clock is Redis's own (``TIME``), so the processes' clocks do
not matter. The burst is small (a tenth of a second of quota) so that a second counted by
Easemob never holds much more than the quota. When Redis cannot be reached the limiter paces
locally, at the same rate, and says so once in the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from redis.exceptions import RedisClusterException, RedisError

from callback_sink.easemob.ratelimit import RateLimiter
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.sink import logs
from callback_sink.sink.redis_client import connect
from callback_sink.sink.replay_window import is_shared

log = logs.get("easemob")

#: The shared bucket holds this many seconds of quota: a small burst, then steady pacing.
BURST_SECONDS = 0.1

# KEYS[1]: the bucket (a hash: tokens, updated µs). ARGV: rate per second, burst.
# Takes one token (the level may go below zero: a reservation); returns the wait in µs.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = burst
  updated = now
end
tokens = math.min(burst, tokens + (now - updated) * rate / 1000000) - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
local wait = 0
if tokens < 0 then wait = math.ceil(-tokens * 1000000 / rate) end
redis.call('PEXPIRE', KEYS[1], math.ceil((wait + burst * 1000000 / rate) / 1000) + 1000)
return wait
"""


class Limiter(Protocol):
    """What the transport needs of a limiter."""

    async def acquire(self) -> None: ...

    async def close(self) -> None: ...


class RedisRateLimiter:
    """At most ``rate`` acquisitions per second across every process sharing ``key``."""

    def __init__(
        self,
        url: str,
        key: str,
        rate: float,
        *,
        burst: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.key = key
        self.rate = rate
        self.burst = max(1.0, rate * BURST_SECONDS if burst is None else burst)
        self._sleep = sleep
        self._client = connect(url, socket_timeout=2, socket_connect_timeout=2, **(tls or {}))
        self._script = self._client.register_script(_RESERVE)
        self._fallback = RateLimiter(rate, self.burst, sleep=sleep)
        self._degraded = False

    async def acquire(self) -> None:
        """Reserve one token in the shared bucket and wait until it is due."""
        try:
            wait_us = await self._script(keys=[self.key], args=[self.rate, self.burst])
        except (RedisError, OSError, RedisClusterException) as exc:
            if not self._degraded:
                log.warning("easemob.quota_unshared", error=type(exc).__name__)
                self._degraded = True
            await self._fallback.acquire()
            return
        if self._degraded:
            log.info("easemob.quota_shared")
            self._degraded = False
        if int(wait_us) > 0:
            await self._sleep(int(wait_us) / 1_000_000)

    async def close(self) -> None:
        await self._client.aclose()


def quota_key(prefix: str, settings: EasemobSettings) -> str:
    return f"{prefix}:easemob-quota:{settings.org}#{settings.app}"


def limiter_for(
    settings: EasemobSettings, dedup_url: str, prefix: str, tls: Mapping[str, Any] | None = None
) -> Limiter:
    """The limiter a REST client of ``settings``' app should use: the shared Redis bucket
    when ``dedup_url`` (``SINK_DEDUP_URL``) is Redis, else a local one; ``tls``: its
    client's TLS options (:func:`callback_sink.sink.tls.redis_tls_kwargs`)."""
    if is_shared(dedup_url):
        key = quota_key(prefix, settings)
        return RedisRateLimiter(dedup_url, key, settings.rate_limit, tls=tls)
    return RateLimiter(settings.rate_limit)
