"""Dead letters can be listed, shown, replayed once (only the failed handler) and purged."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology
from callback_sink.worker.dlq import DeadLetters, Selection, render
from tests.broker import queue_depth
from tests.conftest import Recorder, callback, post, signed

Client = TestClient[Any, Any]


async def wait_for_depth(settings: Settings, queue: str, depth: int) -> None:
    async with asyncio.timeout(20):
        while await queue_depth(settings.amqp_url, queue) != depth:
            await asyncio.sleep(0.05)


async def test_a_fixed_handler_replays_its_dead_letters_once_and_only_itself(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    broken = {"yes": True}

    async def crm(event: Event) -> None:
        if broken["yes"]:
            raise ConnectionError("CRM unreachable")

    await start_worker(
        recorder.handler("tests.audit"), recorder.handler("tests.crm", behaviour=crm)
    )
    for call_id, operation in (("XXXX#XXXX_d1", "apply"), ("XXXX#XXXX_d2", "kick")):
        assert await post(ingress, signed(callback(call_id, operation=operation))) == 200
    dead_queue = f"{settings.topology_prefix}.dead"
    await wait_for_depth(settings, dead_queue, 2)

    topology = Topology(settings.topology_prefix)
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        letters = [d async for d in dlq.letters()]
    assert sorted(d.call_id for d in letters) == ["XXXX#XXXX_d1", "XXXX#XXXX_d2"]
    for d in letters:
        assert d.handlers == "tests.crm"
        assert d.error == "ConnectionError: CRM unreachable"
        assert d.attempts == settings.max_attempts
        assert d.age() != "?"
        assert "[redacted]" in render(d)
    assert await queue_depth(settings.amqp_url, dead_queue) == 2, "listing keeps them"

    broken["yes"] = False
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        replayed = [d async for d in dlq.replay(Selection(event="muc:apply"))]
    assert [d.call_id for d in replayed] == ["XXXX#XXXX_d1"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        replayed = [d async for d in dlq.replay(Selection(handler="tests.crm"))]
    assert [d.call_id for d in replayed] == ["XXXX#XXXX_d2"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        again = [d async for d in dlq.replay(Selection(call_id="XXXX#XXXX_d1"))]
    assert again == [], "a second replay finds nothing"

    await recorder.wait_for(4)
    await asyncio.sleep(0.5)
    assert sorted(e.call_id for e in recorder.of("tests.crm")) == ["XXXX#XXXX_d1", "XXXX#XXXX_d2"]
    assert sorted(e.call_id for e in recorder.of("tests.audit")) == [
        "XXXX#XXXX_d1",
        "XXXX#XXXX_d2",
    ]
    assert await queue_depth(settings.amqp_url, dead_queue) == 0


async def test_purge_deletes_only_what_it_is_asked_to(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def fail(event: Event) -> None:
        raise ValueError("no")

    await start_worker(recorder.handler("tests.fail", behaviour=fail), max_attempts=1)
    for call_id in ("XXXX#XXXX_p1", "XXXX#XXXX_p2"):
        assert await post(ingress, signed(callback(call_id))) == 200
    dead_queue = f"{settings.topology_prefix}.dead"
    await wait_for_depth(settings, dead_queue, 2)
    topology = Topology(settings.topology_prefix)
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        purged = [d async for d in dlq.purge(Selection(call_id="XXXX#XXXX_p1"))]
    assert [d.call_id for d in purged] == ["XXXX#XXXX_p1"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        assert [d.call_id async for d in dlq.letters()] == ["XXXX#XXXX_p2"]
