"""Ordered mode (SINK_ORDERING=group): one group's callbacks reach the handlers in the order the
ingress accepted them, waiting in place for retries, and stepping past a dead letter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aio_pika
import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink import headers
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology
from tests.broker import queue_depth, take_all
from tests.conftest import Recorder, callback, post, signed

Client = TestClient[Any, Any]
GROUPS = 6
PER_GROUP = 25


@pytest.fixture
async def settings(settings: Settings) -> AsyncIterator[Settings]:
    ordered = replace(settings, ordering="group", partitions=4, retry_delays=(0.05, 0.1))
    yield ordered
    connection = await aio_pika.connect(ordered.amqp_url)
    try:
        channel = await connection.channel()
        for name in Topology.of(ordered).partition_queues:
            await channel.queue_delete(name)
        await channel.exchange_delete(Topology.of(ordered).partition_exchange)
    finally:
        await connection.close()


def sequence(recorder: Recorder, handler: str, group: str) -> list[int]:
    return [int(e.raw["seq"]) for e in recorder.of(handler) if e.group_id == group]


async def send_group(ingress: Client, group: str, count: int) -> None:
    """One group's callbacks, each sent once the previous one was accepted."""
    for seq in range(count):
        body = signed(callback(operation="apply", group_id=group, seq=seq))
        assert await post(ingress, body) == 200


async def test_each_callback_lands_in_exactly_one_partition_queue(
    ingress: Client, settings: Settings
) -> None:
    await asyncio.gather(*(send_group(ingress, f"g{i}", 5) for i in range(GROUPS)))
    topology = Topology.of(settings)
    depths = [await queue_depth(settings.amqp_url, q) for q in topology.partition_queues]
    assert sum(depths) == GROUPS * 5
    assert sum(1 for d in depths if d) > 1  # the groups spread over several partitions


async def test_each_groups_callbacks_are_handled_in_the_order_they_were_accepted(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def jitter(event: Event) -> None:
        await asyncio.sleep(0.002 * (int(event.raw["seq"]) % 3))  # later ones would overtake

    groups = [f"g{i}" for i in range(GROUPS)]
    await asyncio.gather(*(send_group(ingress, g, PER_GROUP) for g in groups))
    # A backlog: the worker takes many callbacks of one group at once, and would finish them
    # out of order (the jitter) if they ran concurrently.
    await start_worker(recorder.handler("tests.ordered", behaviour=jitter), concurrency=16)
    await recorder.wait_for(GROUPS * PER_GROUP, within=60)
    for group in groups:
        assert sequence(recorder, "tests.ordered", group) == list(range(PER_GROUP)), group
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 0


async def test_a_failing_callback_is_retried_in_place_and_nothing_overtakes_it(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    failures: dict[int, int] = {}

    async def flaky(event: Event) -> None:
        seq = int(event.raw["seq"])
        if seq == 3 and failures.get(seq, 0) < 2:
            failures[seq] = failures.get(seq, 0) + 1
            raise ConnectionError("CRM blip")

    await start_worker(recorder.handler("tests.flaky", behaviour=flaky))
    await send_group(ingress, "42", 10)
    await recorder.wait_for(10, within=30)
    assert sequence(recorder, "tests.flaky", "42") == list(range(10))
    assert failures == {3: 2}
    for delay_ms in (50, 100):  # no delay queue was ever declared: the retries waited in place
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.delay.{delay_ms}")


async def test_a_callback_that_keeps_failing_is_dead_lettered_and_its_group_moves_on(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def broken_on_two(event: Event) -> None:
        if int(event.raw["seq"]) == 2:
            raise ValueError("cannot handle this one")

    await start_worker(recorder.handler("tests.picky", behaviour=broken_on_two))
    await send_group(ingress, "7", 6)
    await recorder.wait_for(5, within=30)
    assert sequence(recorder, "tests.picky", "7") == [0, 1, 3, 4, 5]
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.headers[headers.DEAD_REASON] == "attempts-exhausted"
    assert dead.headers[headers.ATTEMPT] == settings.max_attempts
