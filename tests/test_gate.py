"""The gate runs a suspect delivery alone and lets ordinary ones through without waiting."""

from __future__ import annotations

import asyncio

from callback_sink.worker.gate import Gate


async def test_a_suspect_waits_for_running_deliveries_and_holds_new_ones_back() -> None:
    gate, order = Gate(), []

    async def ordinary(name: str, hold: float) -> None:
        await gate.enter()
        try:
            order.append(f"{name} start")
            await asyncio.sleep(hold)
            order.append(f"{name} end")
        finally:
            gate.leave()

    async def suspect() -> None:
        async with gate.alone():
            order.append("suspect")
            await asyncio.sleep(0.02)

    first = asyncio.create_task(ordinary("a", 0.05))
    await asyncio.sleep(0.01)
    alone = asyncio.create_task(suspect())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(ordinary("b", 0))
    await asyncio.gather(first, alone, late)
    assert order == ["a start", "a end", "suspect", "b start", "b end"]


async def test_ordinary_deliveries_run_together() -> None:
    gate, running, peak = Gate(), 0, 0

    async def ordinary() -> None:
        nonlocal running, peak
        await gate.enter()
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        gate.leave()

    await asyncio.gather(*(ordinary() for _ in range(5)))
    assert peak == 5
