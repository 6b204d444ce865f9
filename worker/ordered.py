"""Ordered mode (``SINK_ORDERING=group``): a callback that must retry or wait does it in place.

Each partition queue has a single active consumer, and a worker runs one callback of a
partition at a time (one FIFO lock per partition), so one group's callbacks reach its
handlers in the order the ingress accepted them. A callback that cannot be finished now —
a handler failed, another worker still holds its claim, the dedup store is away — must not
let the next one overtake it: instead of a trip through a delay queue, it waits here, on the
same delay tiers, and blocks its partition. A handler that gives up (out of attempts, or a
permanent error) is dead-lettered and the partition steps past it: one broken callback does
not stop its group for ever, and the dead letter says what was skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

from callback_sink.worker.decide import Delivery, Policy, Settlement, decide
from callback_sink.worker.pipeline import DeliveryResult
from callback_sink.worker.settle import Settler, retry_settled

Run = Callable[[frozenset[str]], Awaitable[DeliveryResult]]


class Partitions:
    """One FIFO lock per partition queue: its callbacks run one after another, in the order
    the broker delivered them (asyncio locks wake their waiters first come, first served)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, queue: str) -> asyncio.Lock:
        return self._locks.setdefault(queue, asyncio.Lock())


async def in_place(
    message: AbstractIncomingMessage,
    run: Run,
    settled: frozenset[str],
    delivery: Delivery,
    policy: Policy,
    settler: Settler,
    stopping: Callable[[], bool],
) -> tuple[DeliveryResult, Delivery, Settlement] | None:
    """Run the callback until nothing is left to retry or wait for; the final run to
    settle, or None when the worker is stopping meanwhile (hand the message back: it stays
    first in its partition)."""
    while True:
        ran = await run(settled)
        decision = decide(ran, delivery, policy)
        plan = decision.republish
        if plan is None:
            return ran, delivery, decision
        await settler.interim(message, ran, delivery, decision)
        if stopping():
            return None
        await asyncio.sleep(plan.delay)
        if stopping():
            return None
        settled = retry_settled(ran, decision)
        delivery = Delivery(plan.attempt, delivery.deliveries + 1)
