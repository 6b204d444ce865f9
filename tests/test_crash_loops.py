"""A callback that kills its worker is dead-lettered once its delivery budget is spent, and a
worker SIGKILLed mid-handler hands its callback over within a few claim leases."""

from __future__ import annotations

import asyncio
import signal
import time
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink import headers
from callback_sink.sink.settings import Settings
from tests.broker import queue_depth, take_all
from tests.conftest import callback, post, signed
from tests.processes import SinkProcess
from tests.recording import read_records
from tests.waiting import until

Client = TestClient[Any, Any]


def env_of(settings: Settings, redis_url: str, record_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url,
        "SINK_HANDLERS": "tests.killers",
        "SINK_TEST_RECORD_DIR": str(record_dir),
        **extra,
    }


async def test_a_callback_that_kills_its_worker_reaches_the_dead_letter_queue_at_the_limit(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    env = env_of(settings, redis_url, tmp_path, SINK_MAX_DELIVERIES="3", SINK_CLAIM_LEASE="1")
    assert await post(ingress, signed(callback("XXXX#XXXX_poison", "kick"))) == 200
    healthy = [f"XXXX#XXXX_ok{i}" for i in range(5)]
    for call_id in healthy:
        assert await post(ingress, signed(callback(call_id, "kick"))) == 200
    dead_queue = f"{settings.topology_prefix}.dead"
    deaths = 0
    async with asyncio.timeout(90):
        while await queue_depth(settings.amqp_url, dead_queue) == 0:
            worker = SinkProcess("worker", env)
            await worker.start("worker.started")
            assert worker.process is not None

            async def died_or_dead_lettered(process: Process = worker.process) -> bool:
                if process.returncode is not None:
                    return True
                return bool(await queue_depth(settings.amqp_url, dead_queue))

            await until(died_or_dead_lettered, 90, what="a death or a dead letter", interval=0.1)
            if worker.process.returncode is not None:
                deaths += 1
            else:
                await worker.stop()
    [dead] = await take_all(settings.amqp_url, dead_queue, 1)
    assert dead.message_id == "XXXX#XXXX_poison"
    assert dead.headers[headers.DEAD_REASON] == "delivery-limit"
    assert deaths == 3  # one death per delivery up to SINK_MAX_DELIVERIES
    survivor = SinkProcess("worker", env)
    await survivor.start("worker.started")
    try:
        await until(
            lambda: sum(read_records(tmp_path).values()) >= len(healthy), 30,
            what="every healthy callback handled",
        )  # fmt: skip
    finally:
        assert await survivor.stop() == 0
    assert sorted(read_records(tmp_path)) == sorted(f"lethal|{c}" for c in healthy)
    assert set(read_records(tmp_path).values()) == {1}


@pytest.mark.faults
async def test_a_worker_killed_mid_handler_hands_its_callback_over_within_seconds(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    holder = SinkProcess("worker", env_of(settings, redis_url, tmp_path, SINK_TEST_HOLD="1"))
    taker = SinkProcess("worker", env_of(settings, redis_url, tmp_path))
    await holder.start("worker.started")
    try:
        assert await post(ingress, signed(callback("XXXX#XXXX_held", "apply"))) == 200
        await holder.wait_for_line("test.holding")
        await taker.start("worker.started")
        await holder.stop(signal.SIGKILL)
        killed = time.monotonic()
        # generous: the bench reports the tight figure
        await until(lambda: read_records(tmp_path), 60, what="the taker to handle it")
        handover = time.monotonic() - killed
    finally:
        await holder.kill()
        await taker.stop()
    print(f"\nhand-over after SIGKILL: {handover:.1f} s (claim lease {settings.claim_lease:g} s)")
    assert read_records(tmp_path) == {"hold|XXXX#XXXX_held": 1}
