"""A callback that kills its worker is dead-lettered as a crash loop after a few deaths (or, with
that off, once its delivery budget is spent), and a worker SIGKILLed mid-handler hands its
callback over about one liveness TTL later."""

from __future__ import annotations

import asyncio
import signal
import time
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink import headers
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology, delay_step
from tests.broker import queue_depth, take_all
from tests.conftest import callback, post, signed
from tests.processes import SinkProcess
from tests.recording import read_records
from tests.waiting import until

Client = TestClient[Any, Any]

#: Start-up and scheduling of processes on a loaded machine, on top of a hand-over's design bound.
HANDOVER_SLACK = 5.0
#: The crash loop is dead-lettered within this long of its first post (the issue's bound): four
#: worker start-ups, and three takeovers each within a liveness TTL of a death.
CRASH_LOOP_WITHIN = 60.0


def env_of(settings: Settings, redis_url: str, record_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url,
        "SINK_HANDLERS": "tests.killers",
        "SINK_TEST_RECORD_DIR": str(record_dir),
        **extra,
    }


async def restart_until_dead_lettered(
    settings: Settings, env: dict[str, str], within: float
) -> tuple[int, float, list[dict[str, object]]]:
    """Start a worker each time the last one died (as Kubernetes would, minus its backoff)
    until the dead-letter queue holds a message; answer the deaths, the seconds it took and
    the log lines of the worker that dead-lettered it."""
    dead_queue = f"{settings.topology_prefix}.dead"
    deaths = 0
    lines: list[dict[str, object]] = []
    started = time.monotonic()
    async with asyncio.timeout(within):
        while await queue_depth(settings.amqp_url, dead_queue) == 0:
            worker = SinkProcess("worker", env)
            await worker.start("worker.started")
            assert worker.process is not None

            async def died_or_dead_lettered(process: Process = worker.process) -> bool:
                if process.returncode is not None:
                    return True
                return bool(await queue_depth(settings.amqp_url, dead_queue))

            await until(
                died_or_dead_lettered, within, what="a death or a dead letter", interval=0.1
            )
            if worker.process.returncode is not None:
                deaths += 1
            else:
                await worker.stop()
                lines = worker.lines
    return deaths, time.monotonic() - started, lines


async def post_poison_and_healthy(ingress: Client) -> list[str]:
    assert await post(ingress, signed(callback("XXXX#XXXX_poison", "kick"))) == 200
    healthy = [f"XXXX#XXXX_ok{i}" for i in range(5)]
    for call_id in healthy:
        assert await post(ingress, signed(callback(call_id, "kick"))) == 200
    return healthy


async def assert_handled_once_each(env: dict[str, str], healthy: list[str], records: Path) -> None:
    survivor = SinkProcess("worker", env)
    await survivor.start("worker.started")
    try:
        await until(
            lambda: sum(read_records(records).values()) >= len(healthy), 30,
            what="every healthy callback handled",
        )  # fmt: skip
    finally:
        assert await survivor.stop() == 0
    assert sorted(read_records(records)) == sorted(f"lethal|{c}" for c in healthy)
    assert set(read_records(records).values()) == {1}


async def test_a_callback_that_kills_its_worker_each_time_it_runs_alone_is_a_crash_loop(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    env = env_of(settings, redis_url, tmp_path)  # every default: SINK_MAX_DELIVERIES=20
    healthy = await post_poison_and_healthy(ingress)
    deaths, seconds, lines = await restart_until_dead_lettered(settings, env, CRASH_LOOP_WITHIN)
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.message_id == "XXXX#XXXX_poison"
    assert dead.headers[headers.DEAD_REASON] == "crash-loop"
    # The first run shared its worker with the others (not counted), then one death per lone
    # run up to SINK_CRASH_LOOP_DEATHS.
    print(f"\ncrash loop dead-lettered after {deaths} worker deaths, {seconds:.1f} s")
    assert deaths <= 1 + settings.crash_loop_deaths
    assert seconds < CRASH_LOOP_WITHIN
    [line] = [line for line in lines if line["event"] == "callback.crash_loop"]
    assert (line["level"], line["call_id"], line["outcome"]) == (
        "error",
        dead.message_id,
        "dead_letter",
    )
    assert (line["deaths"], line["handlers"]) == (
        settings.crash_loop_deaths,
        ["tests.killers.lethal"],
    )
    await assert_handled_once_each(env, healthy, tmp_path)


async def test_without_crash_loop_detection_the_delivery_limit_still_dead_letters_it(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    env = env_of(settings, redis_url, tmp_path, SINK_MAX_DELIVERIES="3",
                 SINK_CRASH_LOOP_DEATHS="0")  # fmt: skip
    healthy = await post_poison_and_healthy(ingress)
    deaths, _, _ = await restart_until_dead_lettered(settings, env, within=90)
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.message_id == "XXXX#XXXX_poison"
    assert dead.headers[headers.DEAD_REASON] == "delivery-limit"
    assert deaths == 3  # one death per delivery up to SINK_MAX_DELIVERIES
    await assert_handled_once_each(env, healthy, tmp_path)


@pytest.mark.faults
async def test_a_worker_killed_mid_handler_hands_its_callback_over_within_its_liveness_ttl(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    # A claim lease far longer than the test and a copy whose deferral backoff has grown to
    # its 30 s cap: only the holder's liveness key lapsing can hand the callback over in time.
    ttl, lease = 2.0, 120.0
    env = env_of(settings, redis_url, tmp_path, SINK_LIVENESS_TTL=f"{ttl:g}",
                 SINK_CLAIM_LEASE=f"{lease:g}")  # fmt: skip
    holder = SinkProcess("worker", {**env, "SINK_TEST_HOLD": "1"})
    taker = SinkProcess("worker", env)
    await holder.start("worker.started")
    try:
        body = signed(callback("XXXX#XXXX_held", "apply"))
        await publish_with(settings, body, {headers.DELIVERIES: 15})
        await holder.wait_for_line("test.holding")
        await taker.start("worker.started")
        await holder.stop(signal.SIGKILL)
        killed = time.monotonic()
        await until(lambda: read_records(tmp_path), lease / 2, what="the taker to handle it")
        handover = time.monotonic() - killed
    finally:
        await holder.kill()
        await taker.stop()
    print(f"\nhand-over after SIGKILL: {handover:.1f} s (liveness TTL {ttl:g} s)")
    assert read_records(tmp_path) == {"hold|XXXX#XXXX_held": 1}
    # The key lapses within one TTL of the kill; the deferral waits at most what it had left,
    # rounded up to the delay ladder, then once more for a key about to lapse; plus slack.
    assert handover < 2 * ttl + delay_step(ttl) + HANDOVER_SLACK


async def publish_with(settings: Settings, body: bytes, extra: dict[str, Any]) -> None:
    """Publish ``body`` to the work queue as a copy carrying ``extra`` headers."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body, headers=extra, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=Topology.of(settings).work_queue,
        )
    finally:
        await connection.close()
