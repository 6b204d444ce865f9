"""The gate runs a suspect delivery alone and lets ordinary ones through without waiting."""

from __future__ import annotations

import asyncio

from callback_sink.worker.gate import Gate
from tests.waiting import until


async def test_a_suspect_waits_for_running_deliveries_and_holds_new_ones_back() -> None:
    gate, order = Gate(), []

    release_a = asyncio.Event()

    async def ordinary(name: str, hold: asyncio.Event | None = None) -> None:
        ticket = await gate.enter()
        try:
            order.append(f"{name} start")
            if hold is not None:
                await hold.wait()
            order.append(f"{name} end")
        finally:
            gate.leave(ticket)

    async def suspect() -> None:
        async with gate.alone():
            order.append("suspect")
            await asyncio.sleep(0)  # the scenario: the suspect yields while alone

    first = asyncio.create_task(ordinary("a", release_a))
    await until(lambda: order == ["a start"], 5, what="a to run")
    alone = asyncio.create_task(suspect())
    await asyncio.sleep(0)  # one loop turn: the suspect closes the gate, then waits for a
    late = asyncio.create_task(ordinary("b"))
    await asyncio.sleep(0)  # one loop turn: b reaches the closed gate
    release_a.set()
    await asyncio.gather(first, alone, late)
    assert order == ["a start", "a end", "suspect", "b start", "b end"]


async def test_ordinary_deliveries_run_together() -> None:
    gate, running, peak = Gate(), 0, 0

    async def ordinary() -> None:
        nonlocal running, peak
        ticket = await gate.enter()
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)  # the scenario: a delivery that takes a while
        running -= 1
        gate.leave(ticket)

    await asyncio.gather(*(ordinary() for _ in range(5)))
    assert peak == 5


async def test_deliveries_whose_channel_is_gone_no_longer_hold_a_suspect_back() -> None:
    gate, order = Gate(), []
    release = asyncio.Event()

    async def stuck() -> None:  # a handler longer than the broker's consumer_timeout
        ticket = await gate.enter()
        await release.wait()
        gate.leave(ticket)

    async def suspect() -> None:  # its copy, redelivered on the reopened channel
        async with gate.alone():
            order.append("suspect")

    first = asyncio.create_task(stuck())
    await until(lambda: not gate._idle.is_set(), 5, what="the stuck delivery to enter")
    gate.release_all()
    await asyncio.wait_for(suspect(), 5)
    ticket = await asyncio.wait_for(gate.enter(), 5)  # and new deliveries pass again
    release.set()
    await first  # the old delivery's leave does not count twice
    assert not gate._idle.is_set()
    gate.leave(ticket)
    assert gate._idle.is_set() and order == ["suspect"]
