"""Handler modules for tests that run real worker processes.

They record into Redis (``SINK_TEST_RECORD_KEY``) so that a test can count, across any number
of processes, how often each handler ran for each callback.
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from handlers import Event, on

_client: aioredis.Redis | None = None


def _redis() -> aioredis.Redis:
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(
            os.environ.get("SINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        )
    return _client


async def record(handler: str, event: Event) -> None:
    await _redis().hincrby(os.environ["SINK_TEST_RECORD_KEY"], f"{handler}|{event.dedup_key}", 1)


@on("*")
async def first(event: Event) -> None:
    await record("first", event)


@on("muc", "group_op")
async def second(event: Event) -> None:
    await record("second", event)
