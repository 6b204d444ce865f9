"""A dedup Redis that may evict marks is refused at start-up; a full one (``noeviction`` at
``maxmemory``) pauses the worker, which is not ready meanwhile and logs the outage once.

Each test runs a redis-server of its own on a free port with a small ``maxmemory``, so that
filling it up harms nobody else, and stops it after.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.sink.errors import StartupError
from callback_sink.testing.ports import free_port
from callback_sink.worker import store_health
from callback_sink.worker.probes import readiness
from callback_sink.worker.redis_store import RedisStore
from tests.conftest import Recorder, callback, post, signed
from tests.needs import missing
from tests.waiting import until

Client = TestClient[Any, Any]
#: Large enough for a started Redis and the test's marks; small, as the issue's was.
MAXMEMORY = 4 * 1024 * 1024

Spawn = Callable[..., Awaitable[str]]


@pytest.fixture
async def spawn_redis() -> AsyncIterator[Spawn]:
    """Start redis-server processes (``extra`` arguments appended); all stopped after."""
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    started: list[asyncio.subprocess.Process] = []

    async def spawn(*extra: str) -> str:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--maxmemory", str(MAXMEMORY), *extra,
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started.append(process)
        url = f"redis://127.0.0.1:{port}/0"
        client = aioredis.Redis.from_url(url)
        try:
            await until(lambda: _answers(client), 10, what=f"redis-server on {port}", interval=0.05)
        finally:
            await client.aclose()
        return url

    yield spawn
    for process in started:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def _answers(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (OSError, aioredis.ConnectionError):
        return False


async def make_full(client: aioredis.Redis) -> None:
    """Lower ``maxmemory`` below what Redis uses: with ``noeviction`` it refuses every write
    from now on, as a production Redis grown to its limit does. (Filling it with keys
    instead leaves it hovering at the edge: freed buffers let the next small write in.)"""
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", used // 2)


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lru", "volatile-ttl"])
async def test_a_redis_that_may_evict_marks_is_refused_at_start_up_naming_the_setting(
    spawn_redis: Spawn, start_worker: Any, recorder: Recorder, prefix: str, policy: str
) -> None:
    url = await spawn_redis("--maxmemory-policy", policy)
    with pytest.raises(StartupError) as raised:
        await start_worker(recorder.handler("tests.evicted"), store=RedisStore(url, prefix))
    message = str(raised.value)
    assert "SINK_DEDUP_URL" in message and policy in message and "noeviction" in message
    assert "\n" not in message


async def test_a_redis_whose_config_is_refused_starts_with_a_warning(
    spawn_redis: Spawn, start_worker: Any, recorder: Recorder, prefix: str
) -> None:
    url = await spawn_redis("--maxmemory-policy", "noeviction", "--rename-command", "CONFIG", "")
    with capture_logs() as logs:
        worker = await start_worker(
            recorder.handler("tests.managed"), store=RedisStore(url, prefix)
        )
    assert worker.consuming
    warned = [e for e in logs if e["event"] == "dedup.eviction_unknown"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"


async def test_a_full_redis_pauses_the_worker_not_ready_logging_the_outage_once(
    spawn_redis: Spawn,
    ingress: Client,
    start_worker: Any,
    recorder: Recorder,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_health, "SUMMARY_EVERY", 0.5)  # see a summary within the test
    monkeypatch.setattr(store_health, "PROBE_INTERVAL", 0.05)  # many attempts, few lines
    url = await spawn_redis("--maxmemory-policy", "noeviction")
    worker = await start_worker(recorder.handler("tests.full"), store=RedisStore(url, prefix))
    assert (await readiness(worker))["ready"]
    client = aioredis.Redis.from_url(url)
    try:
        with capture_logs() as logs:
            await make_full(client)
            for _ in range(3):
                assert await post(ingress, signed(callback())) == 200
            await until(lambda: not worker.consuming, 20, what="the worker to pause")
            assert (await readiness(worker))["ready"] is False
            await until(
                lambda: any(e["event"] == "dedup.still_unavailable" for e in logs),
                10,
                what="a summary line while Redis is full",
            )
            assert not recorder.calls
            await client.config_set("maxmemory", MAXMEMORY)  # room again
            await recorder.wait_for(3, within=30)
            await until(lambda: worker.consuming, 10, what="the worker to consume again")
            assert (await readiness(worker))["ready"]
    finally:
        await client.aclose()
    events = [e["event"] for e in logs]
    assert events.count("dedup.unavailable") == 1, events
    assert events.count("dedup.recovered") == 1, events
    summaries = [e for e in logs if e["event"] == "dedup.still_unavailable"]
    attempts = max(e["failures"] for e in summaries)
    assert attempts > len(summaries) and "maxmemory" in summaries[-1]["error"]
