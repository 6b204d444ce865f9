"""Dead-letter tooling behind ``callback-sink dlq list|show|replay|purge``.

Dead letters are read with ``basic.get`` and held unacknowledged while they are looked at;
those not replayed go back to the queue, in order, when the channel closes. A replayed
dead letter is republished (confirmed) to the work queue with its attempt count reset and
its ``x-sink-settled`` list kept, so only the handlers that failed run again; only then is
the dead letter acked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from sink import headers
from sink.topology import Topology, declare
from worker.settle import copy_of, now_iso

#: Failure headers dropped from a replayed copy: the replay starts a fresh attempt count.
_RESET = (
    headers.ATTEMPT, headers.DELIVERIES, headers.DEAD_REASON, headers.FIRST_FAILURE,
    headers.LAST_FAILURE,
)  # fmt: skip


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
        h = {k: _text(v) if isinstance(v, bytes) else v for k, v in (message.headers or {}).items()}
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


class DeadLetters:
    """Open with ``async with DeadLetters.open(url, topology) as dlq``."""

    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self._channel = channel
        self._topology = topology

    @classmethod
    @asynccontextmanager
    async def open(cls, amqp_url: str, topology: Topology) -> AsyncIterator[DeadLetters]:
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare(channel, topology)
            yield cls(channel, topology)
        finally:
            await connection.close()  # every message still held goes back to the queue

    async def _held(self) -> list[AbstractIncomingMessage]:
        """Take every dead letter off the queue without acking it."""
        queue = await self._channel.get_queue(self._topology.dead_queue, ensure=False)
        held: list[AbstractIncomingMessage] = []
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            held.append(message)
        return held

    async def letters(self) -> list[DeadLetter]:
        return [DeadLetter.of(m) for m in await self._held()]

    async def replay(
        self, *, call_id: str | None = None, event: str | None = None, handler: str | None = None
    ) -> list[DeadLetter]:
        """Put matching dead letters back into the work queue; returns what was replayed."""
        return await self._take(call_id, event, handler, self._republish)

    async def purge(
        self, *, call_id: str | None = None, event: str | None = None, handler: str | None = None
    ) -> list[DeadLetter]:
        """Delete matching dead letters for good; returns what was deleted."""

        async def nothing(message: AbstractIncomingMessage) -> None:
            return None

        return await self._take(call_id, event, handler, nothing)

    async def _take(
        self,
        call_id: str | None,
        event: str | None,
        handler: str | None,
        action: Callable[[AbstractIncomingMessage], Any],
    ) -> list[DeadLetter]:
        done = []
        for message in await self._held():
            letter = DeadLetter.of(message)
            if letter.matches(call_id, event, handler):
                await action(message)
                await message.ack()
                done.append(letter)
        return done

    async def _republish(self, message: AbstractIncomingMessage) -> None:
        copy = copy_of(message, {headers.REPLAYED: now_iso()})
        for key in _RESET:
            copy.headers.pop(key, None)
        await self._channel.default_exchange.publish(copy, routing_key=self._topology.work_queue)


def _text(value: bytes) -> str:
    return value.decode(errors="replace")


def render(letter: DeadLetter) -> str:
    """``dlq show``: the failure headers, then the callback as indented JSON (signature hidden)."""
    try:
        doc = orjson.loads(letter.body)
        if isinstance(doc, dict) and "security" in doc:
            doc["security"] = "[redacted]"
        body = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        body = repr(letter.body)
    lines = [f"{k}: {v}" for k, v in sorted(letter.headers.items())]
    return "\n".join([*lines, "", body])
