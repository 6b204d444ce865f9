"""The claims a worker holds, renewed together, and how long each is known to be ours.

A claim is a short lease (``SINK_CLAIM_LEASE``) so that a worker that died hands its callbacks
over within seconds; a live worker therefore renews the leases of the handlers it runs. One
background task per worker renews every held lease in one dedup-store call, a few times per
lease, instead of a timer per callback; renewals go out on time even while an earlier one is
still in flight, so a slow store delays them but does not space them further apart.

What the worker can prove: a lease asked for at ``t`` (a claim or a renewal the store granted)
lives at least until ``t + lease`` on our clock, wherever in the round trip the store set it.
:meth:`Leases.fresh` answers whether that, and the worker's liveness key
(:mod:`~worker.liveness`: past it another worker takes the claim over), still leave a round
trip of margin (what the done mark needs to land); a handler is not started without it. A
renewal whose round trip takes more than :data:`LATE_FRACTION` of the lease is late
(``dedup.renew_late``): the worker takes no new work (:meth:`Leases.timely`) until a round
trip is short again (``dedup.renew_timely``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence

from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.dedup import Claim, DedupStore
from callback_sink.worker.liveness import Liveness

log = logs.get("worker")

#: How many times per lease the held claims are renewed: a lost renewal or two is harmless.
RENEWALS_PER_LEASE = 3
#: A store round trip longer than this share of the lease is late: a renewal or a done mark
#: may then land after the lease lapsed, so the worker takes no new work meanwhile.
LATE_FRACTION = 1 / 3
#: The round trip assumed is the longest of the last this many measured: one fast answer
#: after slow ones does not make the store fast.
RTT_WINDOW = 5


class Leases:
    def __init__(self, store: DedupStore, lease: float, liveness: Liveness | None = None) -> None:
        self.store = store
        self.lease = lease
        #: The worker's liveness key: a claim is ours only while that lives too.
        self.liveness = liveness or Liveness.off(store)
        self._held: dict[tuple[str, str], Claim] = {}
        #: Until when (``time.monotonic()``) each held claim is known to be ours.
        self._until: dict[tuple[str, str], float] = {}
        self._rtts: deque[float] = deque(maxlen=RTT_WINDOW)
        self._timely = asyncio.Event()
        self._timely.set()
        self._task: asyncio.Task[None] | None = None
        self._renewals: set[asyncio.Task[None]] = set()

    @property
    def rtt(self) -> float:
        """The store round trip to allow for, seconds (the longest lately measured)."""
        return max(self._rtts, default=0.0)

    def observe(self, rtt: float) -> None:
        """A store round trip took ``rtt`` seconds: late or timely again?"""
        self._rtts.append(rtt)
        late = rtt > self.lease * LATE_FRACTION
        if late and self._timely.is_set():
            self._timely.clear()
            log.warning("dedup.renew_late", rtt_s=round(rtt, 3), lease_s=self.lease,
                        held=len(self._held))  # fmt: skip
            self._start()  # probes the store until timely, held claims or not
        elif not late and not self._timely.is_set():
            self._timely.set()
            log.info("dedup.renew_timely", rtt_s=round(rtt, 3), lease_s=self.lease)

    async def timely(self) -> None:
        """Return once the store's round trips are short next to the lease (at once, mostly)."""
        if not self._timely.is_set():
            await self._timely.wait()

    def hold(self, key: str, handler: str, claim: Claim, asked_at: float) -> None:
        """Renew ``claim`` from now on; the store granted it to a request sent at
        ``asked_at`` (``time.monotonic()``)."""
        self._held[(key, handler)] = claim
        self._until[(key, handler)] = asked_at + self.lease
        self._start()

    def fresh(self, key: str, handler: str) -> bool:
        """The claim is ours for at least one more round trip (its done mark can land)."""
        until = self._until.get((key, handler))
        if until is None:
            return False
        left = min(until - time.monotonic(), self.liveness.remaining())
        return left > self.rtt

    def drop(self, key: str, handler: str) -> None:
        self._held.pop((key, handler), None)
        self._until.pop((key, handler), None)

    def __len__(self) -> int:
        return len(self._held)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while self._held or not self._timely.is_set():
            await asyncio.sleep(self.lease / RENEWALS_PER_LEASE)
            if self._held:
                task = asyncio.create_task(self._renew(list(self._held.items())))
            elif not self._timely.is_set():
                task = asyncio.create_task(self._probe())
            else:
                break
            self._renewals.add(task)
            task.add_done_callback(self._renewals.discard)

    async def _renew(self, held: Sequence[tuple[tuple[str, str], Claim]]) -> None:
        asked_at = time.monotonic()
        try:
            extended = await self.store.renew(held, self.lease)
        except DedupUnavailable as exc:
            log.warning("dedup.renew_failed", held=len(held), error=str(exc))
            return
        self.observe(time.monotonic() - asked_at)
        for (slot, claim), ours in zip(held, extended, strict=True):
            if self._held.get(slot) is not claim:
                continue  # settled or dropped meanwhile
            if ours:
                self._until[slot] = max(self._until.get(slot, 0.0), asked_at + self.lease)
            else:
                self._until[slot] = 0.0  # lost: never fresh again

    async def _probe(self) -> None:
        asked_at = time.monotonic()
        with contextlib.suppress(DedupUnavailable):
            await self.store.ping()
            self.observe(time.monotonic() - asked_at)

    async def close(self) -> None:
        await self.liveness.close()
        self._held.clear()
        self._until.clear()
        self._timely.set()
        tasks = [t for t in (self._task, *self._renewals) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
