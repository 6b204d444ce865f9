"""The worker's channel, watched: a close by the broker is logged, counted and waited out.

RabbitMQ closes a *channel* (the connection stays up) on a channel error. The one a healthy
worker meets is ``consumer_timeout`` (``rabbitmq.conf``, 30 min by default): a delivery left
unacknowledged longer than that, i.e. a handler that runs longer, closes the channel with
406 PRECONDITION_FAILED "delivery acknowledgement on channel 1 timed out". On RabbitMQ 3.10
the value cannot be read over AMQP nor set per queue (``x-consumer-timeout`` and the
``consumer-timeout`` policy key come with 3.12): keep ``SINK_HANDLER_TIMEOUT`` and every
handler's ``timeout=`` below it, or raise it on the broker.

After such a close aio-pika's robust channel reopens itself and restores the prefetch, the
declarations and the consumers. Until it has, :attr:`ChannelWatch.open` is false, so the
worker is not consuming and ``/readyz`` answers 503; ``worker.channel_closed`` names the
broker's reply code and text and ``callback_sink_worker_channel_closed_total`` counts it.

The deliveries in hand when the channel closed cannot be settled any more: aiormq cancels
their consumer tasks (a handler cut short gives its claim back) and the broker redelivers
them, ``redelivered`` set; ``cancelled`` on ``worker.channel_closed`` counts them. Such a copy
is not a suspect for the worker's :class:`~worker.gate.Gate` (:meth:`ChannelWatch.suspect`):
the gate would run it alone, and a handler that outlived ``consumer_timeout`` once would then
hold every other callback back for as long again, cycle after cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from aiormq.channel import EXCEPTION_MAPPING

from callback_sink.sink import headers, logs
from callback_sink.sink.metrics import WorkerMetrics
from callback_sink.worker.gate import Gate

log = logs.get("worker")

__all__ = ["ChannelWatch", "identity", "reply_of"]

#: How many lost deliveries are remembered until their copy comes back: a copy another worker
#: took never comes here, so the oldest are forgotten (a forgotten one is merely a suspect).
LOST_REMEMBERED = 4096

Consume = Callable[[AbstractIncomingMessage], Awaitable[Any]]

#: aiormq raises a mapped exception class with the reply text alone: its code, back.
_CODES = {cls: code for code, cls in EXCEPTION_MAPPING.items()}


def identity(message: AbstractIncomingMessage) -> bytes:
    """The same for a delivery and its redelivered copy."""
    return hashlib.blake2b(message.body, digest_size=16).digest()


def reply_of(exc: BaseException | None) -> tuple[int, str] | None:
    """The broker's reply code and text of a ``channel.close`` it sent; None for any other
    end of a channel (the worker's own close, a lost connection)."""
    if not isinstance(exc, aiormq.exceptions.ChannelClosed):
        return None
    code = _CODES.get(type(exc))
    if code is not None:
        return code, str(exc.args[0]) if exc.args else ""
    if len(exc.args) == 2 and isinstance(exc.args[0], int):
        return exc.args[0], str(exc.args[1])
    return None  # ChannelClosed(None, None): the close-ok of our own close


class ChannelWatch:
    """Whether the worker's channel is open; logs and counts the broker's closes."""

    def __init__(self, metrics: WorkerMetrics, gate: Gate) -> None:
        #: False from a close of the channel until its consumers are restored.
        self.open = True
        self._metrics = metrics
        self._gate = gate
        self._in_hand: Counter[bytes] = Counter()
        self._lost: dict[bytes, None] = {}  # in hand at a close, copy not back yet; in order
        self._cancelled = 0  # deliveries cut short since the last close was logged

    def track(self, consume: Consume) -> Consume:
        """``consume``, remembering which deliveries are in hand while it runs."""

        async def tracked(message: AbstractIncomingMessage) -> Any:
            key = identity(message)
            self._in_hand[key] += 1
            try:
                return await consume(message)
            except asyncio.CancelledError:  # by a close of the channel (or a stop's deadline)
                self._remember_lost(key)
                raise
            finally:
                self._in_hand[key] -= 1
                if self._in_hand[key] <= 0:
                    del self._in_hand[key]

        return tracked

    def _remember_lost(self, key: bytes) -> None:
        if key not in self._lost:
            self._cancelled += 1
        self._lost[key] = None
        while len(self._lost) > LOST_REMEMBERED:
            del self._lost[next(iter(self._lost))]

    def suspect(self, message: AbstractIncomingMessage) -> bool:
        """Redelivered for another reason than a close of this worker's channel, or the
        deferred copy of a suspect (``x-sink-suspect``: :mod:`~worker.crashloop`)."""
        if (message.headers or {}).get(headers.SUSPECT):
            return True
        if not message.redelivered:
            return False
        return self._lost.pop(identity(message), False) is False

    def watch(self, channel: AbstractRobustChannel) -> None:
        channel.close_callbacks.add(self._closed)
        channel.reopen_callbacks.add(self._reopened)

    def _closed(self, _: Any, exc: BaseException | None = None) -> None:
        self.open = False
        self._gate.release_all()
        for key in self._in_hand:  # any aiormq has not cancelled yet
            self._remember_lost(key)
        cancelled, self._cancelled = self._cancelled, 0
        reply = reply_of(exc)
        if reply is None:
            return
        code, text = reply
        self._metrics.channel_closed.inc()
        log.error("worker.channel_closed", reply_code=code, reply_text=text, cancelled=cancelled)

    def _reopened(self, *_: Any) -> None:
        if not self.open:
            log.info("worker.channel_reopened")
        self.open = True
