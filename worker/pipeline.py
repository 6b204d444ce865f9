"""decode → claim → dispatch: what happens to one delivery before it is settled.

Each step is a small function; :mod:`worker.settle` decides ack / retry / dead-letter from
the :class:`Outcome` these return. Handlers never see the AMQP message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from handlers.registry import Handler
from sink import logs
from sink.errors import DedupUnavailable
from sink.events import Event
from worker.dedup import Claim, DedupStore, State

log = logs.get("worker")

#: A claim's lease, in handler time-outs: the handler is cancelled after one, and the rest
#: leaves room to write its done mark through a short dedup-store outage.
LEASE_FACTOR = 2.0
#: Of that rest, how long a successful handler's done mark may be retried, in time-outs.
DONE_PATIENCE = 0.9


class Result(enum.Enum):
    OK = "ok"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    BUSY = "busy"  # another worker is running it right now
    UNAVAILABLE = "unavailable"  # the dedup store could not be reached: not run


@dataclass
class HandlerResult:
    handler: Handler
    result: Result
    duration_ms: float = 0.0
    error: BaseException | None = None


@dataclass
class Outcome:
    event: Event
    settled_before: frozenset[str] = frozenset()
    results: list[HandlerResult] = field(default_factory=list)

    @property
    def settled(self) -> frozenset[str]:
        """Handlers known done for this callback after this delivery."""
        done = {r.handler.name for r in self.results if r.result in (Result.OK, Result.DUPLICATE)}
        return self.settled_before | done

    @property
    def failures(self) -> list[HandlerResult]:
        return [r for r in self.results if r.result is Result.FAILED]

    @property
    def busy(self) -> bool:
        return any(r.result is Result.BUSY for r in self.results)

    @property
    def store_unavailable(self) -> bool:
        return any(r.result is Result.UNAVAILABLE for r in self.results)


async def dispatch(
    event: Event,
    handlers: Sequence[Handler],
    store: DedupStore,
    *,
    handler_timeout: float,
    done_ttl: float,
    settled: frozenset[str] = frozenset(),
) -> Outcome:
    """Claim and run every subscribed handler not already ``settled``, one after another.

    ``settled`` names the handlers an earlier delivery of this very message saw done; a
    retry skips them outright. When the dedup store cannot be reached no further handler
    runs (without a claim it may not): they are reported ``UNAVAILABLE``, and the message,
    carrying what did run in its ``settled`` list, comes back later.
    """
    outcome = Outcome(event, settled)
    pending = [h for h in handlers if h.name not in settled]
    for handler in pending:
        result = await _run_one(event, handler, store, handler_timeout, done_ttl)
        outcome.results.append(result)
        if result.result is Result.UNAVAILABLE:
            break
    if outcome.store_unavailable:
        ran = {r.handler.name for r in outcome.results}
        outcome.results.extend(
            HandlerResult(h, Result.UNAVAILABLE) for h in pending if h.name not in ran
        )
    return outcome


async def _run_one(
    event: Event, handler: Handler, store: DedupStore, limit: float, done_ttl: float
) -> HandlerResult:
    try:
        claim = await store.claim(event.dedup_key, handler.name, limit * LEASE_FACTOR)
    except DedupUnavailable as exc:
        return HandlerResult(handler, Result.UNAVAILABLE, error=exc)
    if claim.state is State.DONE:
        return HandlerResult(handler, Result.DUPLICATE)
    if claim.state is State.BUSY:
        return HandlerResult(handler, Result.BUSY)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await handler.func(event)
    except asyncio.CancelledError as exc:
        await _release_quietly(store, event, handler, claim)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker is stopping: the message goes back unsettled
        # A handler's own stray CancelledError (a cancelled future it awaited) is a failure.
        return HandlerResult(handler, Result.FAILED, _ms(started), exc)
    except Exception as exc:
        await _release_quietly(store, event, handler, claim)
        return HandlerResult(handler, Result.FAILED, _ms(started), exc)
    # Shielded: a shutdown that cancels us now must not keep a finished handler's mark from
    # landing, or the redelivery would run it again.
    await asyncio.shield(
        _mark_done(store, event, handler, claim, done_ttl, patience=limit * DONE_PATIENCE)
    )
    return HandlerResult(handler, Result.OK, _ms(started))


async def _mark_done(
    store: DedupStore, event: Event, handler: Handler, claim: Claim, ttl: float, patience: float
) -> None:
    """The handler succeeded: its done mark should land, or another copy of the callback
    could run it again. Ride out a short store outage (a Redis restart) within the claim's
    lease. Past that the mark is lost: a retry copy of this message still skips the handler
    (its ``settled`` list), but a plain broker redelivery would run it again."""
    delay = 0.05
    deadline = time.monotonic() + patience
    while True:
        try:
            await store.done(event.dedup_key, handler.name, claim, ttl)
            return
        except DedupUnavailable as exc:
            if time.monotonic() + delay > deadline:
                log.error("dedup.mark_lost", handler=handler.name, error=str(exc))
                return
            log.warning("dedup.mark_retry", handler=handler.name, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _release_quietly(store: DedupStore, event: Event, handler: Handler, claim: Claim) -> None:
    with contextlib.suppress(DedupUnavailable):  # the lease expires on its own anyway
        await store.release(event.dedup_key, handler.name, claim)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
