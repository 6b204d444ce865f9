"""Waiting on conditions, never on the clock: the one helper tests use instead of ``sleep``.

A fixed sleep is either too short on a loaded CI machine (a flaky failure) or too long
everywhere else (a slow suite). :func:`until` polls a condition and fails naming it;
:func:`drain_and_stop` is the worker's drain-then-stop, for "and nothing more arrives" checks.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from callback_sink.worker.consumer import Worker
from callback_sink.worker.depth import QueueDepths

#: How often a condition is asked, seconds: short next to any timeout, long next to a poll.
INTERVAL = 0.02

Predicate = Callable[[], Any]


async def until(
    predicate: Predicate, within: float = 30.0, what: str = "", interval: float = INTERVAL
) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that.

    Fails with an ``AssertionError`` naming ``what`` (or the predicate) after ``within``
    seconds; an exception raised by the predicate propagates at once.
    """
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {within}s waiting for {name}")
        await asyncio.sleep(interval)


async def drain_and_stop(worker: Worker, within: float = 30.0) -> None:
    """Wait until the broker holds nothing for ``worker``, stop it (running handlers finish),
    then check nothing came back: after this, no handler of its can run again.

    This replaces "sleep a little, a duplicate would land now": a duplicate or a retry still
    in a work, partition or delay queue fails the check instead of being missed by a short
    sleep. Stopping twice is harmless, so the ``start_worker`` fixture may stop it again.
    """
    depths = QueueDepths(worker.settings, worker.metrics.depths)

    async def idle() -> bool:
        counts = await depths.poll()
        return counts["work"] == counts["retry"] == 0

    try:
        await until(idle, within, what="the work and delay queues to be empty")
        await worker.stop()
        left = await depths.poll()
    finally:
        await depths.close()
    assert left["work"] == left["retry"] == 0, f"messages came back after the drain: {left}"
