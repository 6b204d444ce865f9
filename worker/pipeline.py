"""claim → dispatch: what happens to one decoded delivery before it is decided and settled.

Every subscribed handler not already settled is claimed in one round trip
(:meth:`DedupStore.claim_all`, which also binds the callId to its kind of event), then run one
after another under its own time-out and concurrency cap while the worker's
:class:`~worker.leases.Leases` renews the claims it holds. :mod:`worker.decide` turns the
:class:`DeliveryResult` into ack / retry / dead-letter, and :mod:`worker.settle` carries that
out. Handlers never see the AMQP message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from callback_sink.handlers.registry import Handler
from callback_sink.handlers.transactional import Inbox
from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable, InboxDuplicate, InboxUnavailable
from callback_sink.sink.events import Event
from callback_sink.worker import crashloop, inbox
from callback_sink.worker.dedup import Claim, ClaimRequest, DedupStore, State
from callback_sink.worker.leases import Leases

log = logs.get("worker")

#: Of a handler's time-out, how long its successful done mark may be retried through a
#: dedup-store outage (the lease is renewed meanwhile, so nobody else takes it over).
DONE_PATIENCE = 0.9


class Result(enum.Enum):
    """How one handler's run went, before :mod:`worker.decide` turns a failure into a
    ``retry`` or a ``dead_letter`` (:class:`~sink.outcomes.DeliveryResult`)."""

    OK = "ok"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    BUSY = "busy"  # another worker is running it right now, or our claim went stale
    #: It ran, but its claim lapsed meanwhile and another worker took (or settled) it: the
    #: done mark was refused, and the handler ran twice (``dedup.lease_lost``).
    LEASE_LOST = "lease_lost"
    UNAVAILABLE = "unavailable"  # the dedup store could not be reached: not run
    #: A transactional handler's PostgreSQL was away: nothing committed (:mod:`worker.inbox`).
    INBOX_UNAVAILABLE = "inbox_unavailable"


@dataclass
class HandlerResult:
    handler: Handler
    result: Result
    duration_ms: float = 0.0
    error: BaseException | None = None


@dataclass
class DeliveryResult:
    """What the handlers did with one delivery of a callback."""

    event: Event
    settled_before: frozenset[str] = frozenset()
    results: list[HandlerResult] = field(default_factory=list)
    #: The kind this callId was first seen as, when it differs from this event's: forged.
    forged_as: str | None = None
    #: Deliveries of this callback that started handlers (this one included, if it did).
    runs: int = 0
    #: True when starting handlers again would pass ``SINK_MAX_DELIVERIES``: nothing ran.
    over_budget: bool = False
    #: The handlers this delivery was to run (subscribed, not settled before); when it is
    #: forged or over budget, those that did not run because of it.
    pending: tuple[str, ...] = ()
    #: Ran with nothing else in flight (a suspect): a death now is its own (:mod:`.crashloop`).
    alone: bool = False
    #: Deaths of its lone runs when that reached ``SINK_CRASH_LOOP_DEATHS``: nothing ran.
    crash_deaths: int = 0
    #: Seconds until a busy handler's holder, if dead, is known so: defer no longer.
    retry_after: float | None = None

    @property
    def settled(self) -> frozenset[str]:
        """Handlers known done for this callback after this delivery."""
        ended = (Result.OK, Result.DUPLICATE, Result.LEASE_LOST)
        done = {r.handler.name for r in self.results if r.result in ended}
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


@dataclass(frozen=True)
class RunPolicy:
    """The worker-wide limits a handler runs under unless its ``@on(...)`` overrides them."""

    handler_timeout: float
    done_ttl: float
    #: The worker's held claims, renewed together; their lease is ``leases.lease``.
    leases: Leases
    #: Deliveries that may start handlers (``SINK_MAX_DELIVERIES``), crashes included.
    max_runs: int = 20
    slots: Mapping[str, asyncio.Semaphore] = field(default_factory=dict)
    #: Deaths of lone runs before a callback is dead-lettered (``SINK_CRASH_LOOP_DEATHS``).
    crash_deaths: int = 0
    #: Where ``@on(transactional=True)`` handlers run (``SINK_INBOX_URL``; :mod:`worker.inbox`).
    inbox: Inbox | None = None

    def timeout_of(self, handler: Handler) -> float:
        return handler.options.timeout or self.handler_timeout


async def dispatch(
    event: Event,
    handlers: Sequence[Handler],
    store: DedupStore,
    policy: RunPolicy,
    *,
    settled: frozenset[str] = frozenset(),
    alone: bool = False,
    epoch: str = "",
) -> DeliveryResult:
    """Claim and run every subscribed handler not already ``settled``, one after another.

    ``settled`` names the handlers an earlier delivery of this very message saw done (or
    that another copy of it owns); this delivery skips them outright. When the dedup store
    cannot be reached nothing runs (without a claim it may not): every handler is reported
    ``UNAVAILABLE`` and the message, carrying what did run, comes back later. ``alone``: no
    other delivery is in flight (a suspect, :mod:`~worker.crashloop`); ``epoch``: the replay
    stamp its deaths are counted under.
    """
    pending = [h for h in handlers if h.name not in settled]
    ran = DeliveryResult(event, settled, pending=tuple(h.name for h in pending), alone=alone)
    leases, key = policy.leases, event.dedup_key
    await leases.timely()  # a slow store: take no new work until its round trips are short
    asked_at = time.monotonic()
    ask = ClaimRequest(
        event.dedup_key, event.call_id, event.kind, [h.name for h in pending],
        policy.leases.lease, policy.done_ttl, policy.max_runs, leases.liveness.worker,
        epoch=epoch,
    )  # fmt: skip
    try:
        await leases.liveness.ensure()
        found = await crashloop.claim(store, ask, alone=alone, epoch=epoch)
    except DedupUnavailable as exc:
        ran.results = [HandlerResult(h, Result.UNAVAILABLE, error=exc) for h in pending]
        return ran
    leases.observe(time.monotonic() - asked_at)
    if found.bound_kind != event.kind:
        ran.forged_as = found.bound_kind
        return ran
    ran.runs = found.runs
    if found.over_budget(policy.max_runs):
        ran.over_budget = True
        return ran
    ran.retry_after = found.retry_after
    held = {h.name: c for h, c in zip(pending, found.claims, strict=True) if c.token}
    if crashloop.crash_loop(found.deaths, policy.crash_deaths):
        ran.crash_deaths = found.deaths  # dead-lettered: nothing runs, every claim goes back
        for name, claim in held.items():
            await _release_quietly(store, event, name, claim)
        with contextlib.suppress(DedupUnavailable):
            await store.alone_ended(ask, found.mark)
        return ran
    for name, claim in held.items():
        leases.hold(key, name, claim, asked_at)
    dying = False
    try:
        for handler, claim in zip(pending, found.claims, strict=True):
            if claim.state is State.DONE:
                ran.results.append(HandlerResult(handler, Result.DUPLICATE))
            elif claim.state is State.BUSY:
                ran.results.append(HandlerResult(handler, Result.BUSY))
            elif not leases.fresh(key, handler.name):
                # Not provably ours for a round trip more: its done mark could land after
                # another worker took it over. Give it back; the copy comes back later.
                log.warning("dedup.claim_stale", handler=handler.name, rtt_s=round(leases.rtt, 3))
                ran.results.append(HandlerResult(handler, Result.BUSY))
            else:
                result = await _run_one(event, handler, store, claim, policy)
                held.pop(handler.name, None)
                leases.drop(key, handler.name)
                ran.results.append(result)
    except BaseException as exc:
        dying = not isinstance(exc, Exception | asyncio.CancelledError)  # SystemExit: a death
        raise
    finally:
        # Whatever stopped us early (shutdown, SystemExit from a handler), the claims not run
        # must not wait out their lease before another worker may take them.
        for name, claim in list(held.items()):
            held.pop(name)
            leases.drop(key, name)
            await _release_quietly(store, event, name, claim)
        if found.mark and not dying:
            with contextlib.suppress(DedupUnavailable):  # left behind: judged alive later
                await store.alone_ended(ask, found.mark)
    return ran


async def _run_one(
    event: Event, handler: Handler, store: DedupStore, claim: Claim, policy: RunPolicy
) -> HandlerResult:
    limit = policy.timeout_of(handler)
    slot = policy.slots.get(handler.name)
    started = time.perf_counter()
    result, found = Result.OK, None
    try:
        async with slot or _UNLIMITED, asyncio.timeout(limit):
            await inbox.call(handler, event, policy.inbox)
    except InboxDuplicate as exc:
        result, found = Result.DUPLICATE, exc  # committed before: mark it done here too
    except InboxUnavailable as exc:
        await _release_quietly(store, event, handler.name, claim)
        return HandlerResult(handler, Result.INBOX_UNAVAILABLE, _ms(started), exc)
    except asyncio.CancelledError as exc:
        await _release_quietly(store, event, handler.name, claim)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the worker is stopping: the message goes back unsettled
        # A handler's own stray CancelledError (a cancelled future it awaited) is a failure.
        return HandlerResult(handler, Result.FAILED, _ms(started), exc)
    except Exception as exc:
        await _release_quietly(store, event, handler.name, claim)
        return HandlerResult(handler, Result.FAILED, _ms(started), exc)
    except BaseException:
        # SystemExit / KeyboardInterrupt from a handler: the process is going down. Give the
        # claim back first so the redelivery (which counts toward SINK_MAX_DELIVERIES) need
        # not wait for the lease to lapse.
        await _release_quietly(store, event, handler.name, claim)
        raise
    marked = await _mark_done(
        store, event, handler, claim, policy.done_ttl, patience=limit * DONE_PATIENCE
    )
    if not marked:
        log.error("dedup.lease_lost", call_id=event.call_id, handler=handler.name,
                  lease_s=policy.leases.lease, rtt_s=round(policy.leases.rtt, 3))  # fmt: skip
        return HandlerResult(handler, Result.LEASE_LOST, _ms(started))
    return HandlerResult(handler, result, _ms(started), found)


class _Unlimited:
    """The concurrency cap of a handler without one: entering costs no generator."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_UNLIMITED = _Unlimited()


async def _mark_done(
    store: DedupStore, event: Event, handler: Handler, claim: Claim, ttl: float, patience: float
) -> bool:
    """The handler succeeded: its done mark should land, or another copy of the callback
    could run it again. A shutdown that cancels us now must not keep the mark from landing
    (the redelivery would run the handler again): the first attempt's write is queued before
    it first yields (:class:`~worker.redis_batch.ScriptBatcher`: a cancelled caller's call
    still goes out), and the retries through a short store outage (a Redis restart) run
    shielded. Cancelled while that first write is in flight (it may yet fail), we write the
    mark again, shielded, before giving in to the cancel: a second write of a mark that
    landed is refused and changes nothing. That write and its retries hold the cancel back
    for up to the patience; a worker that stops meanwhile closes the store after its grace
    (``CANCEL_GRACE``), and the mark is lost with it. Past the patience the
    mark is lost: a retry copy of this message still skips
    the handler (its ``settled`` list), but a plain broker redelivery would run it again.
    False: the store refused the mark, another worker took the claim over after ours lapsed
    (see :meth:`DedupStore.done`)."""
    deadline = time.monotonic() + patience
    try:  # the usual path, without the task a shield costs
        return await store.done(event.dedup_key, handler.name, claim, ttl)
    except DedupUnavailable as exc:
        retried = _retry_mark(store, event, handler, claim, ttl, deadline, exc)
    except asyncio.CancelledError:
        await asyncio.shield(_mark_again(store, event, handler, claim, ttl, deadline))
        raise
    return await asyncio.shield(retried)


async def _mark_again(
    store: DedupStore, event: Event, handler: Handler, claim: Claim, ttl: float, deadline: float
) -> None:
    """The mark once more, for a cancelled caller: nobody may be left to hear how it went
    (cancelled twice), so a failure other than an outage is logged here, never raised."""
    try:
        try:
            await store.done(event.dedup_key, handler.name, claim, ttl)
        except DedupUnavailable as exc:
            await _retry_mark(store, event, handler, claim, ttl, deadline, exc)
    except Exception as exc:  # a store closed under us at shutdown, say
        _mark_lost(handler, exc)


async def _retry_mark(
    store: DedupStore,
    event: Event,
    handler: Handler,
    claim: Claim,
    ttl: float,
    deadline: float,
    error: DedupUnavailable,
) -> bool:
    delay = 0.05
    while True:
        if time.monotonic() + delay > deadline:
            _mark_lost(handler, error)
            return True  # not refused: lost; nothing more can be known
        log.warning("dedup.mark_retry", handler=handler.name, error=str(error))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
        try:
            return await store.done(event.dedup_key, handler.name, claim, ttl)
        except DedupUnavailable as exc:
            error = exc


def _mark_lost(handler: Handler, error: Exception) -> None:
    log.error("dedup.mark_lost", handler=handler.name, error_type=type(error).__name__,
              error=str(error), exc_info=error)  # fmt: skip


async def _release_quietly(store: DedupStore, event: Event, handler: str, claim: Claim) -> None:
    with contextlib.suppress(DedupUnavailable):  # the lease expires on its own anyway
        await store.release(event.dedup_key, handler, claim)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
