"""Dead-letter tooling behind ``callback-sink dlq list|show|replay|purge``.

Dead letters are read one at a time with ``basic.get`` and held unacknowledged on the broker
while they are looked at, so a scan of any length keeps one message in this process's memory
and never sees one twice; those not replayed or purged go back to the queue, in their order,
when the connection closes.

Looking is not free of side effects, and no read of a quorum queue is: the broker counts
every delivery of a message in its ``x-delivery-count`` (RabbitMQ 3.x counts this return on
close too; a get followed by a nack with requeue, or a consume then a cancel, would count
the same). So ``list`` and ``show`` bump that count on every dead letter they scan, and it is
made harmless instead: the dead-letter queue is declared without a delivery limit (it has no
dead-letter route of its own, so a limit would drop letters; checked on RabbitMQ 3.10, where
a letter looked at more often than any work queue's limit stays), nothing reads the count,
:class:`DeadLetter` leaves it out of what it shows (two looks show the same text), and a
replayed copy starts with a fresh one (the broker sets it on each delivery of the copy).

Nothing is declared: the queues are looked up passively, so a mistyped prefix fails with
:class:`NoDeadLetterQueue` instead of creating an empty topology. A replayed dead letter is
republished (confirmed) to the work queue with its attempt count reset and its
``x-sink-settled`` list kept, so only the handlers that failed run again, and stamped
``x-sink-replayed`` (when) and ``x-sink-replay-of`` (the dead reason it came from): the
worker's log lines for that run say ``replay: true``. Only after the broker confirmed the
copy is the dead letter acked. Interrupted at any point, a replay loses
nothing; at worst one callback is both replayed and still dead, and dedup absorbs the
second replay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiormq.exceptions
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from callback_sink.sink import headers
from callback_sink.sink.amqp import connect_first
from callback_sink.sink.config import csv
from callback_sink.sink.errors import SinkError
from callback_sink.sink.topology import Topology
from callback_sink.worker.settle import copy_of, now_iso

#: Failure headers dropped from a replayed copy: the replay starts a fresh attempt count.
_RESET = (
    headers.ATTEMPT, headers.DELIVERIES, headers.DEAD_REASON, headers.FIRST_FAILURE,
    headers.LAST_FAILURE, headers.BROKER_DELIVERY_COUNT,
)  # fmt: skip
#: Headers the broker changes each time a dead letter is looked at: not part of the letter.
_BROKER_OWNED = frozenset({headers.BROKER_DELIVERY_COUNT, "x-acquired-count"})


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as ``dlq list`` shows it."""

    call_id: str
    event_name: str
    handlers: str
    error: str
    attempts: int
    reason: str
    last_failure: str
    body: bytes
    headers: dict[str, Any]

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        found = message.headers or {}
        h = {k: _decoded(v) for k, v in found.items() if k not in _BROKER_OWNED}
        error = f"{h.get(headers.ERROR_TYPE, '?')}: {h.get(headers.ERROR, '')}"
        attempts = h.get(headers.ATTEMPT, 1)
        return cls(
            call_id=message.message_id or "?",
            event_name=str(h.get(headers.EVENT, "?")),
            handlers=str(h.get(headers.FAILED_HANDLERS, "")),
            error=error,
            attempts=attempts if isinstance(attempts, int) else 1,
            reason=str(h.get(headers.DEAD_REASON, "rejected")),
            last_failure=str(h.get(headers.LAST_FAILURE, "")),
            body=message.body,
            headers=h,
        )

    def age(self, now: dt.datetime | None = None) -> str:
        try:
            then = dt.datetime.fromisoformat(self.last_failure)
        except ValueError:
            return "?"
        seconds = int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"

    def matches(self, call_id: str | None, event: str | None, handler: str | None) -> bool:
        return (
            (call_id is None or self.call_id == call_id)
            and (event is None or self.event_name == event)
            and (handler is None or handler in self.handlers.split(","))
        )


class NoDeadLetterQueue(SinkError):
    """The broker has no such queue: a wrong ``SINK_TOPOLOGY_PREFIX`` or ``SINK_AMQP_URL``."""


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; every criterion given must match."""

    call_id: str | None = None
    event: str | None = None
    handler: str | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        return letter.matches(self.call_id, self.event, self.handler)


EVERY = Selection()
#: Replayed copies in flight at once: their confirms are awaited together (a replay of
#: thousands takes seconds, not one round trip each), yet few are held in memory.
REPLAY_BATCH = 100

#: Called with (scanned, acted on) after each dead letter looked at: for a progress line.
Progress = Callable[[int, int], None]


class DeadLetters:
    """Open with ``async with DeadLetters.open(url, topology) as dlq``; ``depth`` is how many
    dead letters the queue held when it was opened."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue, topology: Topology) -> None:
        self._channel = channel
        self._queue = queue
        self._topology = topology
        self.depth = int(queue.declaration_result.message_count or 0)

    @classmethod
    @asynccontextmanager
    async def open(
        cls, amqp_url: str, topology: Topology, ssl_context: ssl.SSLContext | None = None
    ) -> AsyncIterator[DeadLetters]:
        connection = await connect_first(csv(amqp_url), ssl_context=ssl_context)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            queue = await _existing(channel, topology.dead_queue, "dead-letter queue")
            yield cls(channel, queue, topology)
        finally:
            await connection.close()  # every message still held goes back to the queue

    async def _scan(
        self, select: Selection, limit: int | None, progress: Progress | None = None
    ) -> AsyncIterator[AbstractIncomingMessage]:
        """Matching dead letters, up to ``limit``, each left unacknowledged."""
        scanned = found = 0
        while limit is None or found < limit:
            message = await self._queue.get(no_ack=False, fail=False)
            if message is None:
                return
            scanned += 1
            if select(DeadLetter.of(message)):
                found += 1
                yield message
            if progress is not None:
                progress(scanned, found)

    async def letters(
        self, select: Selection = EVERY, *, limit: int | None = None
    ) -> AsyncIterator[DeadLetter]:
        """Matching dead letters, oldest first; all of them stay in the queue."""
        async for message in self._scan(select, limit):
            yield DeadLetter.of(message)

    async def replay(
        self, select: Selection, *, limit: int | None = None, progress: Progress | None = None
    ) -> AsyncIterator[DeadLetter]:
        """Put matching dead letters back into the work queue, yielding each once its copy is
        confirmed and the dead letter acked."""
        await _existing(self._channel, self._topology.work_queue, "work queue")
        batch: list[AbstractIncomingMessage] = []
        async for message in self._scan(select, limit, progress):
            batch.append(message)
            if len(batch) >= REPLAY_BATCH:
                for letter in await self._replay(batch):
                    yield letter
                batch = []
        for letter in await self._replay(batch):
            yield letter

    async def purge(
        self, select: Selection, *, limit: int | None = None, progress: Progress | None = None
    ) -> AsyncIterator[DeadLetter]:
        """Delete matching dead letters for good, yielding each one deleted."""
        async for message in self._scan(select, limit, progress):
            await message.ack()
            yield DeadLetter.of(message)

    async def _replay(self, batch: list[AbstractIncomingMessage]) -> list[DeadLetter]:
        results = await asyncio.gather(
            *(self._republish(message) for message in batch), return_exceptions=True
        )
        done = []
        for message, result in zip(batch, results, strict=True):
            if result is None:  # confirmed: now the original may go
                await message.ack()
                done.append(DeadLetter.of(message))
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        return done

    async def _republish(self, message: AbstractIncomingMessage) -> None:
        stamp = {headers.REPLAYED: now_iso(), headers.REPLAY_OF: DeadLetter.of(message).reason}
        copy = copy_of(message, stamp)
        for key in _RESET:
            copy.headers.pop(key, None)
        await self._channel.default_exchange.publish(copy, routing_key=self._topology.work_queue)


async def _existing(channel: AbstractChannel, name: str, what: str) -> AbstractQueue:
    """The queue ``name``, looked up without creating it."""
    try:
        return await channel.get_queue(name, ensure=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise NoDeadLetterQueue(
            f"no {what} {name!r} on the broker: check SINK_TOPOLOGY_PREFIX and SINK_AMQP_URL "
            "(a worker or an ingress creates it when it first starts)"
        ) from None


def _decoded(value: Any) -> Any:
    """A header value with its AMQP byte strings as text, nested ones too (``x-death``)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [_decoded(v) for v in value]
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    return value


def callback_of(letter: DeadLetter) -> Any:
    """The dead letter's callback document with its signature hidden (the raw text if it
    is not JSON: an undecodable message)."""
    try:
        doc = orjson.loads(letter.body)
    except orjson.JSONDecodeError:
        return letter.body.decode(errors="replace")
    if isinstance(doc, dict) and "security" in doc:
        doc["security"] = "[redacted]"
    return doc


def as_dict(letter: DeadLetter, *, body: bool = True) -> dict[str, Any]:
    """``dlq list --json`` / ``dlq show --json``: one object per dead letter."""
    fields = {
        "call_id": letter.call_id,
        "event": letter.event_name,
        "handlers": [h for h in letter.handlers.split(",") if h],
        "error": letter.error,
        "attempts": letter.attempts,
        "reason": letter.reason,
        "last_failure": letter.last_failure or None,
    }
    if body:
        fields["headers"] = orjson.loads(_json(letter.headers))
        fields["callback"] = callback_of(letter)
    return fields


def _json(value: Any) -> bytes:
    """JSON of a header value: AMQP timestamps as ISO text, anything stranger as its text."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS)


def render(letter: DeadLetter) -> str:
    """``dlq show``: the headers, one per line (a nested one as JSON; a multi-line one, like a
    traceback, indented below its name), then the callback as indented JSON (signature
    hidden). Never a Python ``repr``."""
    doc = callback_of(letter)
    body = doc if isinstance(doc, str) else orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    lines = []
    for key, value in sorted(letter.headers.items()):
        if isinstance(value, str) and "\n" in value:
            lines += [f"{key}:", *(f"    {line}" for line in value.rstrip("\n").splitlines())]
        else:
            text = value if isinstance(value, str) else _json(value).decode()
            lines.append(f"{key}: {text}")
    return "\n".join([*lines, "", body])
