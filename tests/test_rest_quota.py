"""One REST quota for all workers: clients of one app share a token bucket in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.models import NewGroup
from callback_sink.easemob.ratelimit import RateLimiter
from callback_sink.easemob.redis_limiter import RedisRateLimiter, limiter_for, quota_key
from callback_sink.easemob.rest import GroupClient
from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.sink.errors import EasemobThrottled
from tests.directory_fixtures import client_settings_for

#: The emulated app's quota, and what each client is configured to send: a margin below it,
#: so that a request sent a little late does not land in the next second's count.
QUOTA = 50
RATE = 40.0
#: How long the clients keep the API busy, seconds.
STEADY = 2.5


@pytest.fixture
async def emulator() -> AsyncIterator[tuple[Emulator, EasemobSettings]]:
    settings = EmulatorSettings(sink_url="", rate_limit=QUOTA)
    emulator = Emulator(settings, callback_secret="s")
    server = TestServer(emulator.app())
    await server.start_server()
    client = client_settings_for(server, settings)
    yield emulator, EasemobSettings(**{**client.__dict__, "rate_limit": RATE})
    await server.close()


async def keep_busy(client: GroupClient, group_id: str, until: float) -> int:
    calls = 0
    while time.monotonic() < until:
        with contextlib.suppress(EasemobThrottled):  # throttling outlasted the attempts
            await client.admins(group_id)
        calls += 1
    return calls


async def two_workers(settings: EasemobSettings, group_id: str, make_limiter: object) -> list[int]:
    """Two clients (two workers' REST clients), four callers each, for STEADY seconds."""
    assert callable(make_limiter)
    clients = [GroupClient(settings, limiter=make_limiter()) for _ in range(2)]
    until = time.monotonic() + STEADY
    try:
        return await asyncio.gather(
            *(keep_busy(client, group_id, until) for client in clients for _ in range(4))
        )
    finally:
        for client in clients:
            await client.close()


async def new_group(settings: EasemobSettings) -> str:
    async with GroupClient(settings) as client:
        return await client.create_group(NewGroup(name="q", owner="alice"))


async def test_two_workers_sharing_one_redis_limiter_stay_within_the_app_quota(
    emulator: tuple[Emulator, EasemobSettings], redis_url: str
) -> None:
    server, settings = emulator
    group_id = await new_group(settings)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        calls = await two_workers(
            settings, group_id, lambda: limiter_for(settings, redis_url, prefix)
        )
    finally:
        redis = aioredis.Redis.from_url(redis_url)
        await redis.delete(quota_key(prefix, settings))
        await redis.aclose()
    assert server.quota.throttled == 0
    assert server.quota.busiest <= QUOTA
    # Together they used the quota they were given, not twice it.
    assert sum(calls) <= RATE * (STEADY + 1)
    assert sum(calls) >= RATE * STEADY * 0.5


async def test_two_workers_pacing_themselves_alone_overrun_the_quota(
    emulator: tuple[Emulator, EasemobSettings],
) -> None:
    server, settings = emulator
    group_id = await new_group(settings)
    await two_workers(settings, group_id, lambda: RateLimiter(settings.rate_limit))
    assert server.quota.throttled > 0


async def test_the_emulator_answers_easemob_s_429_above_the_quota(
    emulator: tuple[Emulator, EasemobSettings],
) -> None:
    server, settings = emulator
    server.quota.rate = 1
    server.quota.clock = lambda: 0.0  # every request in one second: no retry can slip past
    async with GroupClient(settings, limiter=RateLimiter(1000)) as client:
        with pytest.raises(Exception) as refused:
            await client.create_group(NewGroup(name="q", owner="alice"))
    assert getattr(refused.value, "error", None) == "too_many_requests"


async def test_without_redis_the_limiter_paces_locally_and_says_so() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", "k", 1000.0)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                await asyncio.wait_for(limiter.acquire(), 5)
        assert [line["event"] for line in logs].count("easemob.quota_unshared") == 1
    finally:
        await limiter.close()


def test_a_memory_dedup_store_means_a_local_limiter() -> None:
    settings = EasemobSettings(rate_limit=10)
    assert isinstance(limiter_for(settings, "memory://", "p"), RateLimiter)
