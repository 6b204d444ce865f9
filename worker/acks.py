"""acks: the acks of one event-loop tick, sent as one ``basic.ack`` with ``multiple=True``.

Deliveries settled at the same moment (their Redis claims and done marks come back in one
pipeline, :mod:`worker.redis_batch`) are acked together: :meth:`Acks.ack` queues the delivery
and, one tick later, every ack queued meanwhile goes out. An ack with ``multiple=True`` covers
every delivery of the channel up to its tag that is still unacknowledged, so it is sent only
up to the end of a *contiguous* run of delivery tags, each of them either queued here or
already settled some other way (:meth:`Acks.settled`: a nack, a reject, a lone ack). A tag of
the run's range that nobody reported — a delivery still running, or one whose settlement was
not reported — ends the run: the acks above it wait :data:`HOLD_SECONDS` for it to settle,
then go out one by one, as before. So an ack never covers a delivery that is not settled,
whatever order deliveries settle in; at worst (a settlement not reported, a gap that never
fills) every ack is a lone one.

Delivery tags count per channel from 1: a reopened channel starts a new run. Each caller
awaits its own ack, written, as with ``message.ack()``; an error writing it (the channel
closed) is raised to every caller it covered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

#: How long an ack above a delivery still in hand waits for that one to settle (then it goes
#: alone): a handler's slot stays taken that much longer at most.
HOLD_SECONDS = 0.002
#: Channels remembered at once (one, bar a reopen): an older one's tags are forgotten.
MAX_CHANNELS = 4
#: A channel whose run of settled tags stays broken for this many settlements (a settlement
#: nobody reported) stops batching: its acks go out one by one, its memory is freed.
MAX_SETTLED_ABOVE = 65536


#: A queued ack: the delivery, its caller's future, when it was queued (loop time).
_Queued = tuple[AbstractIncomingMessage, "asyncio.Future[None]", float]


@dataclass
class _Run:
    """Per channel: every tag up to ``floor`` is settled; ``settled`` holds those above it."""

    floor: int = 0
    settled: set[int] = field(default_factory=set)
    broken: bool = False


class Acks:
    """One worker's acks, gathered per tick (see the module's docstring)."""

    def __init__(self) -> None:
        self._runs: dict[object, _Run] = {}
        self._queued: list[_Queued] = []
        self._held: list[_Queued] = []
        self._flushing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack ``message`` with the others settled in this tick; return once written."""
        if message.delivery_tag is None:
            await message.ack()
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queued.append((message, done, loop.time()))
        self._kick()
        await done

    def settled(self, message: AbstractIncomingMessage) -> None:
        """``message`` was settled without :meth:`ack` (nacked, rejected, acked alone)."""
        if message.delivery_tag is not None:
            self._record(self._run_of(message), message.delivery_tag)
            if self._held:
                self._kick()  # it may close the gap that holds acks back

    def _kick(self) -> None:
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_next_tick())

    def _expired(self) -> None:
        self._timer = None
        self._kick()

    async def _flush_next_tick(self) -> None:
        await asyncio.sleep(0)  # every settle of this tick queues its ack first
        self._flushing = None
        taken, self._queued, self._held = self._held + self._queued, [], []
        by_channel: dict[object, list[_Queued]] = {}
        for item in taken:
            by_channel.setdefault(item[0].channel, []).append(item)
        held: list[_Queued] = []
        try:
            sends = (self._send(items, held) for items in by_channel.values())
            await asyncio.gather(*sends, return_exceptions=True)  # each channel to its end
        finally:  # whatever went wrong, no caller waits for ever
            kept = {id(item) for item in held}
            for item in taken:
                if not item[1].done() and id(item) not in kept:
                    item[1].set_exception(RuntimeError("ack not sent"))
        if self._held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, self._expired)

    async def _send(self, items: list[_Queued], held: list[_Queued]) -> None:
        run = self._run_of(items[0][0])
        items.sort(key=lambda item: item[0].delivery_tag or 0)
        tags = {item[0].delivery_tag for item in items}
        top = run.floor
        while not run.broken and (top + 1 in tags or top + 1 in run.settled):
            top += 1
        covered = [item for item in items if (item[0].delivery_tag or 0) <= top]
        above = [item for item in items if (item[0].delivery_tag or 0) > top]
        if covered:
            last = covered[-1][0]
            await _settle(covered, last.ack(multiple=len(covered) > 1))
            for tag in range(run.floor + 1, top + 1):
                run.settled.discard(tag)
            run.floor = top
            self._record(run, None)
        # Above a delivery still in hand: held back a moment for it to settle, then alone.
        now = asyncio.get_running_loop().time()
        for item in above:
            if not run.broken and now - item[2] < HOLD_SECONDS:
                self._held.append(item)
                held.append(item)
                continue
            await _settle([item], item[0].ack())
            self._record(run, item[0].delivery_tag or 0)

    def _run_of(self, message: AbstractIncomingMessage) -> _Run:
        channel = message.channel
        run = self._runs.get(channel)
        if run is None:
            while len(self._runs) >= MAX_CHANNELS:
                del self._runs[next(iter(self._runs))]
            run = self._runs[channel] = _Run()
        return run

    @staticmethod
    def _record(run: _Run, tag: int | None) -> None:
        """``tag`` settled (None: nothing new); move the floor over the run it completes."""
        if run.broken:
            return
        if tag is not None:
            run.settled.add(tag)
        while run.floor + 1 in run.settled:
            run.floor += 1
            run.settled.discard(run.floor)
        if len(run.settled) > MAX_SETTLED_ABOVE:
            run.broken = True
            run.settled.clear()


async def _settle(items: list[_Queued], sent: Awaitable[None]) -> None:
    """Await the write ``sent`` and pass its outcome to every caller it covers."""
    try:
        await sent
    except BaseException as exc:
        for _, done, _ in items:
            if not done.done():
                done.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
        return
    for _, done, _ in items:
        if not done.done():
            done.set_result(None)
