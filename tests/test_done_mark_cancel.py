"""A handler's done mark when the delivery is cancelled (a shutdown past its timeout) while the
mark's first write is in flight: the write may still fail, so the mark is written again,
shielded, before the cancel goes on (``worker.pipeline._mark_done``).

The store here is the memory store with its ``done`` held open (the answer of a write that
went out) and failing on demand: what is tested is the pipeline's retry logic, not a store.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from structlog.testing import capture_logs

from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.dedup import Claim, ClaimRequest, MemoryStore, State
from callback_sink.worker.pipeline import _mark_done
from tests.waiting import until

KEY, HANDLER = "call-1", "audit"


class HeldFirstWrite(MemoryStore):
    """``done``'s first write waits for its answer (``answer``); ``lands`` says whether that
    write reached the store before the answer; ``fail_next`` writes after it fail with an
    outage, and ``broken`` makes them raise something else (a store closed under us)."""

    def __init__(self, lands: bool, fail_next: int = 0, broken: bool = False) -> None:
        super().__init__()
        self.lands = lands
        self.fail_next = fail_next
        self.broken = broken
        self.writes = 0
        self.in_flight = asyncio.Event()
        self.answer = asyncio.Event()

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> bool:
        self.writes += 1
        if self.writes == 1:
            landed = await super().done(key, handler, claim, ttl) if self.lands else True
            self.in_flight.set()
            await self.answer.wait()
            return landed
        if self.broken:
            raise RuntimeError("the store is closed")
        if self.fail_next:
            self.fail_next -= 1
            raise DedupUnavailable("redis: Connection reset by peer")
        return await super().done(key, handler, claim, ttl)


async def _claim(store: MemoryStore) -> Claim:
    ask = ClaimRequest(
        key=KEY, call_id=KEY, kind="group", handlers=[HANDLER], lease=30, bind_ttl=60, max_runs=5
    )
    return (await store.claim_all(ask)).claims[0]


async def _cancel_in_flight(store: HeldFirstWrite) -> asyncio.Task[bool]:
    claim = await _claim(store)
    event = cast(Any, SimpleNamespace(dedup_key=KEY))
    handler = cast(Any, SimpleNamespace(name=HANDLER))
    task = asyncio.create_task(_mark_done(store, event, handler, claim, 60.0, patience=5.0))
    await store.in_flight.wait()
    task.cancel()
    return task


@pytest.mark.parametrize("lands", [False, True], ids=["first-write-lost", "first-write-landed"])
async def test_a_mark_cancelled_in_flight_is_written_again_before_the_cancel_goes_on(
    lands: bool,
) -> None:
    store = HeldFirstWrite(lands=lands)
    task = await _cancel_in_flight(store)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.writes == 2
    again = await _claim(store)  # a redelivery of the callback finds the handler done
    assert again.state is State.DONE


async def test_the_second_write_retries_through_a_store_outage_even_past_the_cancel() -> None:
    store = HeldFirstWrite(lands=False, fail_next=2)
    task = await _cancel_in_flight(store)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.writes == 4  # the first, two refused by the outage, the one that landed
    assert (await _claim(store)).state is State.DONE


async def test_a_second_cancel_leaves_the_shielded_write_running() -> None:
    store = HeldFirstWrite(lands=False, fail_next=1)
    task = await _cancel_in_flight(store)
    await until(lambda: store.writes >= 2)  # the retry is under way, waiting out the outage
    task.cancel()  # cancelled again: the shielded write goes on without its caller
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: store.writes == 3)
    assert (await _claim(store)).state is State.DONE


async def test_a_second_write_that_breaks_is_logged_and_the_cancel_still_goes_on() -> None:
    store = HeldFirstWrite(lands=False, broken=True)
    with capture_logs() as logs:
        task = await _cancel_in_flight(store)
        with pytest.raises(asyncio.CancelledError):
            await task
    lost = [e for e in logs if e["event"] == "dedup.mark_lost"]
    assert len(lost) == 1 and lost[0]["error_type"] == "RuntimeError"
    assert lost[0]["log_level"] == "error" and lost[0]["handler"] == HANDLER
