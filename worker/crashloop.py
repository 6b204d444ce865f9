"""Crash loops: a callback that kills its worker is dead-lettered after a few deaths, and a dead
worker's claims are taken over as soon as it is known dead.

**Who is to blame for a death.** A worker runs many callbacks at once, so when it dies (an
``os._exit``, a segfault in native code, an out-of-memory kill) nothing says which callback
did it. The broker redelivers every callback that was in hand, ``redelivered`` set, and the
worker that gets such a copy runs it *alone* (:class:`~worker.gate.Gate`): nothing else is in
flight while its handlers run. If the worker dies during a lone run, that callback is the
culprit, and nobody else pays for it.

**How a death is known.** A lone run leaves a *mark* in the callback's crash record (one small
record per callback, beside its claims: ``<worker-id>.<random>``) when it has claimed its
handlers, and takes it away when it ends, whatever the handlers did: success, failure or a
stop that cancelled them. Only a run whose process went down never takes it away (nor does a
handler's ``SystemExit``: the process goes down because of it). The next lone delivery that
claims a handler of the same callback and finds a mark of another run left there asks whether
that run's worker is alive: its liveness key (:mod:`~worker.liveness`) is one short key per
worker process, renewed every third of its TTL while the process lives.

- Key gone: the worker died during a lone run of this callback. One death is counted.
- Key there: the worker lives; its run lost its claims some other way (the store was slow, or
  its event loop stalled past the lease), and no death is counted.

Whichever the answer, the mark becomes this run's own (compare-and-set: two judges of one
mark count it once). At ``SINK_CRASH_LOOP_DEATHS`` deaths the delivery runs nothing and is
dead-lettered with reason ``crash-loop`` (``callback.crash_loop``). The first run of a poison
callback was not alone, so it is not counted: with the default of 2 the callback takes down
three worker processes in all (the first, shared run, then two lone ones), not the
``SINK_MAX_DELIVERIES`` of 20. That budget stays as the outer net for what this cannot see:
a callback that only kills its worker when others run beside it, or a memory:// worker, whose
marks die with it. A death counts within one *epoch*: ``callback-sink dlq replay`` stamps the
copy it puts back (``x-sink-replayed``), and a new stamp starts the count again, so a replay
after the fix runs instead of being dead-lettered by the deaths of before.

A deferred copy of a lone delivery (its claims were busy: it ran nothing) keeps the suspicion
(``x-sink-suspect``): it is not a broker redelivery, but it is the same suspect, and it must
come back alone to be judged.

**Taking over a dead worker's claims.** A claim's token starts with the worker id of its holder.
A claim found busy is looked at the same way: when its holder's liveness key is gone, the
claim is taken over at once (the claim script treats that token's marks as free, so the take
is fenced like any claim: a token that changed meanwhile is not taken, and the done mark of a
worker that was merely slow is refused). When the holder still lives, the copy is deferred no
longer than its key has left to live (:attr:`Claims.retry_after`), so that a worker killed a
moment ago is taken over about one liveness TTL later, whatever backoff the copy had grown.
The liveness key of another worker is read with a command of its own, never inside a script:
in a Redis Cluster a script may touch the keys of one callback only.

Everything here but :func:`claim` is pure, so it is tested without a store.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from callback_sink.sink.headers import REPLAYED

if TYPE_CHECKING:
    from callback_sink.worker.dedup import Claim, ClaimRequest, Claims, DedupStore

#: A judge of a mark that keeps changing under it gives up after this many looks (two lone
#: runs of one callback at once, which only duplicates of a copy can cause).
JUDGE_LOOKS = 3


@dataclass(frozen=True)
class Record:
    """A callback's crash record: the mark of its lone run in flight, its deaths, its epoch."""

    alone: str = ""
    deaths: int = 0
    epoch: str = ""


@dataclass(frozen=True)
class Reckoning:
    """What :func:`reckon` answered: the deaths so far, or a mark to judge first."""

    deaths: int
    #: An earlier lone run's mark, left behind: ask whether its worker lives, then again.
    judge: str = ""


def worker_of(token: str) -> str:
    """The worker id a claim token or a mark starts with; "" for a token without one."""
    worker, dot, _ = token.partition(".")
    return worker if dot else ""


def new_mark(owner: str) -> str:
    return f"{owner}.{uuid.uuid4().hex}"


def reckon(record: Record, mark: str, epoch: str, judged: str = "", dead: bool = False) -> (
    tuple[Record, Reckoning]
):  # fmt: skip
    """A lone run with ``mark`` starts (it has claimed handlers). A mark of another run left in
    ``record`` must be judged first (answered in :attr:`Reckoning.judge`; nothing changes);
    asked again with that mark as ``judged`` and whether its worker is ``dead``, it counts a
    death if so and puts ``mark`` in its place. A new ``epoch`` (a replay) starts afresh."""
    if record.epoch != epoch:
        record = Record(epoch=epoch)
    deaths = record.deaths
    if record.alone and record.alone != mark:
        if record.alone != judged:
            return record, Reckoning(deaths, judge=record.alone)
        deaths += int(dead)
    return Record(mark, deaths, epoch), Reckoning(deaths)


def ended(record: Record, mark: str) -> Record:
    """The lone run with ``mark`` ended in this process: its mark goes."""
    return replace(record, alone="") if record.alone == mark else record


def crash_loop(deaths: int, limit: int) -> bool:
    """Dead-letter now? ``limit`` is ``SINK_CRASH_LOOP_DEATHS``; 0 turns detection off."""
    return limit > 0 and deaths >= limit


def epoch_of(headers: Mapping[str, Any] | None) -> str:
    """The epoch deaths are counted in: the stamp of the replay that put the copy back."""
    value = (headers or {}).get(REPLAYED, "")
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Takeover:
    """Of a claim that found busy handlers: which to take again, and how long to wait for
    the rest."""

    #: Handlers held by a worker whose liveness key is gone, and those holders' tokens.
    handlers: tuple[str, ...] = ()
    dead: frozenset[str] = frozenset()
    #: Seconds until the liveness key of the last live holder lapses; None: no live holder
    #: known (no hint: the usual backoff).
    retry_after: float | None = None


def takeover(
    handlers: Sequence[str], claims: Sequence[Claim], left: Mapping[str, float], owner: str
) -> Takeover:
    """Decide from ``left`` (seconds each holder's liveness key has left, 0: gone) which busy
    ``claims`` to take over. Our own claims and tokens without a worker id are never taken."""
    taken, dead, waits = [], set(), []
    for name, claim in zip(handlers, claims, strict=True):
        worker = worker_of(claim.holder)
        if not claim.holder or not worker or worker == owner or worker not in left:
            continue
        if left[worker] <= 0:
            taken.append(name)
            dead.add(claim.holder)
        else:
            waits.append(left[worker])
    return Takeover(tuple(taken), frozenset(dead), max(waits) if waits else None)


async def claim(
    store: DedupStore, ask: ClaimRequest, *, alone: bool = False, epoch: str = ""
) -> Claims:
    """:meth:`DedupStore.claim_all`, then: take over the claims of dead workers; for a lone
    run that claimed handlers, reckon the deaths of the lone run before it."""
    found = await store.claim_all(ask)
    if not found.claims:
        return found  # forged, or over SINK_MAX_DELIVERIES
    found = await _take_over(store, ask, found)
    if not alone or not any(c.token for c in found.claims):
        return found
    mark, judged, dead = new_mark(ask.owner), "", False
    for _ in range(JUDGE_LOOKS):
        answer = await store.reckon(ask, mark, epoch, judged, dead)
        if not answer.judge:
            return replace(found, deaths=answer.deaths, mark=mark)
        judged = answer.judge
        dead = (await store.live([worker_of(judged)]))[0] <= 0
    return replace(found, mark=mark)  # judged by another lone run meanwhile: no death here


async def _take_over(store: DedupStore, ask: ClaimRequest, found: Claims) -> Claims:
    workers = sorted({worker_of(c.holder) for c in found.claims if c.holder} - {"", ask.owner})
    if not workers:
        return found
    left = dict(zip(workers, await store.live(workers), strict=True))
    plan = takeover(ask.handlers, found.claims, left, ask.owner)
    if not plan.handlers:
        return replace(found, retry_after=plan.retry_after)
    counted = any(c.token for c in found.claims)
    again = await store.claim_all(
        replace(ask, handlers=plan.handlers, dead=plan.dead, count_run=not counted)
    )
    if not again.claims:
        return found if counted else again  # over budget: the takeover would be one run more
    retaken = dict(zip(plan.handlers, again.claims, strict=True))
    claims = tuple(retaken.get(h, c) for h, c in zip(ask.handlers, found.claims, strict=True))
    still_busy = any(c.holder for c in claims)
    runs = max(found.runs, again.runs)
    return replace(
        found, claims=claims, runs=runs, retry_after=plan.retry_after if still_busy else None
    )
