"""Per-handler deduplication: an atomic claim with a lease, then a "done" mark with a TTL.

A callback is identified by its dedup key (callId, or callId + ``to`` for offline messages)
and each handler keeps its own mark, so a redelivery re-runs only the handlers that have not
succeeded. Two stores share one interface: :class:`MemoryStore` (one process) and
:class:`RedisStore` (any number of workers).

:meth:`DedupStore.claim_all` takes every handler's claim of one callback in one round trip and
binds the ``callId`` to the kind of event it first arrived as: Easemob's signature covers only
``callId`` and ``timestamp``, so a captured callback replayed with another ``eventType`` or
``payload`` is told apart here (the bound kind differs) and refused as forged. A claim is a
short lease that the running worker renews (:meth:`DedupStore.renew`), so a worker killed
mid-handler hands its callbacks over within one lease.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from callback_sink.worker import crashloop
from callback_sink.worker.crashloop import Reckoning

if TYPE_CHECKING:
    from callback_sink.worker.replica_wait import ReplicaWait

DONE = "done"
#: The slot under which a callId's first kind is kept (no handler has this name).
KIND_SLOT = "\x00kind"
#: The slot counting the deliveries of a callback that started handlers.
RUNS_SLOT = "\x00runs"
#: The slot of a callback's crash record (:mod:`~worker.crashloop`), and of a worker's
#: liveness key (:mod:`~worker.liveness`).
CRASH_SLOT = "\x00crash"
LIVE_SLOT = "\x00live"
#: The memory store sweeps expired marks after this many writes.
SWEEP_EVERY = 1024


class State(enum.Enum):
    CLAIMED = "claimed"  # this worker may run the handler now
    DONE = "done"  # the handler already succeeded for this callback
    BUSY = "busy"  # another worker holds a live lease: try again later


@dataclass(frozen=True)
class Claim:
    state: State
    token: str = ""
    #: Where the store keeps this claim's marks when that is not derived from the dedup key
    #: alone (a Redis Cluster hash tag: the callId); settling the claim goes there too.
    tag: str = ""
    #: Of a BUSY claim: the token that holds it (its worker is :func:`crashloop.worker_of` it).
    holder: str = ""


@dataclass(frozen=True)
class ClaimRequest:
    """What :meth:`DedupStore.claim_all` is asked for one delivery."""

    #: The callback's dedup key (callId, or callId + ``to`` for offline messages).
    key: str
    call_id: str
    #: The kind of event it arrived as (``event.kind``); a callId keeps its first kind.
    kind: str
    handlers: Sequence[str]
    #: Seconds each claim is leased for.
    lease: float
    #: Seconds the kind binding and the run count are kept (the dedup TTL).
    bind_ttl: float
    #: Deliveries that may start handlers (``SINK_MAX_DELIVERIES``).
    max_runs: int
    #: The worker asking (:mod:`~worker.liveness`): its tokens start with ``owner.``.
    owner: str = ""
    #: Tokens whose worker is gone (its liveness key lapsed): their marks count as free.
    dead: frozenset[str] = frozenset()
    #: False when an earlier claim of this very delivery counted its run already.
    count_run: bool = True
    #: The replay stamp (``x-sink-replayed``) runs are counted under: a replayed dead letter
    #: starts a fresh ``SINK_MAX_DELIVERIES`` budget instead of finding it spent.
    epoch: str = ""

    @property
    def runs_key(self) -> str:
        """The key its runs are counted under (the dedup key, within its replay epoch)."""
        return f"{self.key}@{self.epoch}" if self.epoch else self.key


@dataclass(frozen=True)
class Claims:
    """What :meth:`DedupStore.claim_all` found: the kind the callId is bound to, how many
    deliveries of this callback have started handlers (this one included, if it claimed
    any), and (only when the kind is the one asked for and ``runs`` is within the budget)
    one claim per handler, in order."""

    bound_kind: str
    claims: tuple[Claim, ...] = ()
    runs: int = 0
    #: Set by :func:`worker.crashloop.claim`: deaths of this callback's lone runs so far,
    #: the mark of this delivery's lone run, and when a busy claim's holder may be known dead.
    deaths: int = 0
    mark: str = ""
    retry_after: float | None = None

    def over_budget(self, max_runs: int) -> bool:
        return self.runs > max_runs


class DedupStore(Protocol):
    #: What ``worker.started`` names as the store in use (``memory`` or ``redis``).
    kind: str
    #: The marks are visible to this process alone: its worker must be the only consumer of
    #: its queues, or a callback delivered twice could run once in each worker.
    single_consumer: bool

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        """Atomically take the right to run ``handler`` for callback ``key``."""

    async def claim_all(self, ask: ClaimRequest) -> Claims:
        """Bind the callId to its kind unless already bound; if bound to that kind, claim
        every free handler of the callback at once (one token for all) and count one more run
        when any was free, unless that run would be past ``max_runs``: then claim none."""

    async def renew(
        self, held: Sequence[tuple[tuple[str, str], Claim]], lease: float
    ) -> list[bool]:
        """Extend the leases of ``((key, handler), claim)`` still held (a no-op for claims
        lost or settled), all in one call; answer, for each, whether it was still ours."""

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> bool:
        """Record that ``handler`` succeeded; later claims answer DONE for ``ttl`` seconds.
        The claim's token is the fence: False (nothing written) when another claim holds or
        settled the handler since ours lapsed, i.e. this run was a duplicate. The write is
        issued before the first suspension, so a caller cancelled meanwhile (a shutdown) does
        not keep it from landing (:func:`worker.pipeline._mark_done` relies on it)."""

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        """Give the claim back after a failure so that a retry can claim it again."""

    async def alive(self, worker: str, ttl: float) -> None:
        """(Re)set ``worker``'s liveness key for ``ttl`` seconds (:mod:`~worker.liveness`)."""

    async def gone(self, worker: str) -> None:
        """Remove ``worker``'s liveness key: it stops, and holds nothing any more."""

    async def live(self, workers: Sequence[str]) -> list[float]:
        """Seconds each worker's liveness key has left; 0 when it is gone. One command per
        key, never a script: another worker's key is not one of a callback's keys."""

    async def reckon(
        self, ask: ClaimRequest, mark: str, epoch: str, judged: str, dead: bool
    ) -> Reckoning:
        """Atomically apply :func:`worker.crashloop.reckon` to the callback's crash record."""

    async def alone_ended(self, ask: ClaimRequest, mark: str) -> None:
        """Atomically apply :func:`worker.crashloop.ended` to the callback's crash record."""

    async def ping(self) -> None:
        """Raise :class:`DedupUnavailable` when the store cannot be reached."""

    async def close(self) -> None: ...


class MemoryStore:
    """Dedup marks in this process's memory: the default, for one worker process."""

    kind = "memory"
    single_consumer = True

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], tuple[str, float]] = {}
        self._writes = 0

    def _set(self, slot: tuple[str, str], value: str, ttl: float) -> None:
        self._marks.pop(slot, None)  # re-insert at the end: the dict stays ~ in expiry order
        self._marks[slot] = (value, time.monotonic() + ttl)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        """Forget expired marks from the front, stopping at the first live one: callIds never
        come back to expire their own marks. Done marks share one TTL, so they expire in
        insertion order; a live lease at the front only delays the sweep a little. Only the
        expired front is visited, never the whole store."""
        now = time.monotonic()
        expired = []
        for slot, (_, expires) in self._marks.items():
            if expires > now:
                break
            expired.append(slot)
        for slot in expired:
            del self._marks[slot]

    def _live(self, slot: tuple[str, str]) -> str | None:
        mark = self._marks.get(slot)
        if mark is None:
            return None
        if mark[1] <= time.monotonic():
            del self._marks[slot]
            return None
        return mark[0]

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        slot = (key, handler)
        value = self._live(slot)
        if value == DONE:
            return Claim(State.DONE)
        if value is not None:
            return Claim(State.BUSY)
        token = uuid.uuid4().hex
        self._set(slot, token, lease)
        return Claim(State.CLAIMED, token)

    async def claim_all(self, ask: ClaimRequest) -> Claims:
        bind = (ask.call_id, KIND_SLOT)
        bound = self._live(bind)
        if bound is None:
            self._set(bind, ask.kind, ask.bind_ttl)
            bound = ask.kind
        if bound != ask.kind:
            return Claims(bound)
        states = [self._live((ask.key, h)) for h in ask.handlers]
        states = [None if value in ask.dead else value for value in states]
        runs = int(self._live((ask.runs_key, RUNS_SLOT)) or 0)
        if any(value is None for value in states) and ask.count_run:
            runs += 1
            if runs > ask.max_runs:
                return Claims(bound, (), runs)
            self._set((ask.runs_key, RUNS_SLOT), str(runs), ask.bind_ttl)
        token = new_token(ask.owner)
        claims = []
        for handler, value in zip(ask.handlers, states, strict=True):
            if value == DONE:
                claims.append(Claim(State.DONE))
            elif value is not None:
                claims.append(Claim(State.BUSY, holder=value))
            else:
                self._set((ask.key, handler), token, ask.lease)
                claims.append(Claim(State.CLAIMED, token))
        return Claims(bound, tuple(claims), runs)

    async def renew(
        self, held: Sequence[tuple[tuple[str, str], Claim]], lease: float
    ) -> list[bool]:
        extended = []
        for slot, claim in held:
            ours = self._live(slot) == claim.token
            if ours:
                self._set(slot, claim.token, lease)
            extended.append(ours)
        return extended

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> bool:
        value = self._live((key, handler))
        if value is not None and value != claim.token:
            return False
        self._set((key, handler), DONE, ttl)
        return True

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        if self._live((key, handler)) == claim.token:
            del self._marks[(key, handler)]

    async def alive(self, worker: str, ttl: float) -> None:
        self._set((worker, LIVE_SLOT), "1", ttl)

    async def gone(self, worker: str) -> None:
        self._marks.pop((worker, LIVE_SLOT), None)

    async def live(self, workers: Sequence[str]) -> list[float]:
        now = time.monotonic()
        found = [self._marks.get((w, LIVE_SLOT), ("", now)) for w in workers]
        return [max(0.0, expires - now) for _, expires in found]

    async def reckon(
        self, ask: ClaimRequest, mark: str, epoch: str, judged: str, dead: bool
    ) -> Reckoning:
        record, answer = crashloop.reckon(self._record(ask.key), mark, epoch, judged, dead)
        if not answer.judge:
            self._set((ask.key, CRASH_SLOT), _packed(record), ask.bind_ttl)
        return answer

    async def alone_ended(self, ask: ClaimRequest, mark: str) -> None:
        record = self._record(ask.key)
        if record.alone == mark:
            self._set((ask.key, CRASH_SLOT), _packed(crashloop.ended(record, mark)), ask.bind_ttl)

    def _record(self, key: str) -> crashloop.Record:
        alone, deaths, epoch = (self._live((key, CRASH_SLOT)) or "\x1f0\x1f").split("\x1f")
        return crashloop.Record(alone, int(deaths), epoch)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._marks.clear()


class _Tokens:
    """Unique claim tokens without a ``uuid4`` (a system call and an object) per claim: 64
    random bits drawn once per process (again in a forked child), then a counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.salt = uuid.uuid4().hex[:16]
        self.count = itertools.count()

    def next(self) -> str:
        return f"{self.salt}{next(self.count):x}"


_tokens = _Tokens()


def new_token(owner: str) -> str:
    """A claim's token: the fence of its marks, led by its worker's id (who holds it?)."""
    return f"{owner}.{_tokens.next()}" if owner else _tokens.next()


def _packed(record: crashloop.Record) -> str:
    return f"{record.alone}\x1f{record.deaths}\x1f{record.epoch}"


def open_store(
    url: str, prefix: str, wait: ReplicaWait | None = None, tls: Mapping[str, Any] | None = None
) -> DedupStore:
    """The store named by ``SINK_DEDUP_URL``; ``wait``: ``SINK_DEDUP_WAIT``, ``tls``: the
    client's TLS options (:func:`callback_sink.sink.tls.redis_tls_kwargs`) (Redis only)."""
    if url.startswith("memory://"):
        return MemoryStore()
    from callback_sink.worker.redis_store import (
        RedisStore,  # only workers that use Redis load its client
    )

    return RedisStore(url, prefix, wait, tls)
