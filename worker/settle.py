"""settle: the one place that decides ack, retry with backoff, or dead-letter.

A retry is a copy of the message published (with confirms) to a delay queue whose TTL
dead-letters it back into the work queue, carrying ``x-sink-attempt``; the original is acked
only after that publish is confirmed. A crash in between means a redelivery, which the
per-handler dedup marks make harmless.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from sink import headers, logs
from sink.errors import DecodeError, PermanentError, Retry
from sink.settings import Settings
from sink.topology import Topology, declare_delay
from worker.pipeline import Outcome, Result

log = logs.get("worker")

#: Delay before re-trying a callback whose handler another worker is running right now, or
#: whose handlers could not be claimed because the dedup store was unreachable.
BUSY_DELAY = 1.0
#: What a handler's ``Retry(delay=…)`` is rounded up to, seconds (besides the configured
#: tiers): every distinct delay is a durable queue, so their number must stay small.
RETRY_LADDER = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
#: Longest error message kept in a dead letter's headers.
MAX_ERROR_CHARS = 500


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Settler:
    def __init__(self, channel: AbstractChannel, topology: Topology, settings: Settings) -> None:
        self._channel = channel
        self._topology = topology
        self._settings = settings
        self._delay_queues: set[int] = set()

    async def settle(self, message: AbstractIncomingMessage, outcome: Outcome) -> None:
        """Log one ``callback.handled`` line per handler and settle the message."""
        attempt = attempt_of(message)
        failures = outcome.failures
        dead = bool(failures) and (
            attempt >= self._settings.max_attempts
            or any(isinstance(f.error, PermanentError) for f in failures)
        )
        for r in outcome.results:
            if r.result in (Result.BUSY, Result.UNAVAILABLE):
                log.debug("callback.deferred", handler=r.handler.name, reason=r.result.value)
                continue
            fields: dict[str, Any] = {}
            if r.error is not None:
                fields = {"error_type": type(r.error).__name__, "error": _text(r.error)}
            outcome_name = "dead" if dead and r.result is Result.FAILED else r.result.value
            log.info(
                "callback.handled",
                call_id=outcome.event.call_id,
                event_name=outcome.event.name,
                handler=r.handler.name,
                outcome=outcome_name,
                duration_ms=r.duration_ms,
                attempt=attempt,
                **fields,
            )
        if dead:
            permanent = any(isinstance(f.error, PermanentError) for f in failures)
            reason = "permanent" if permanent else "attempts-exhausted"
            extra = {**_failure_headers(message, outcome), headers.ATTEMPT: attempt}
            await self.dead_letter(message, reason, extra)
        elif failures:
            delay = self._delay_for(attempt, [f.error for f in failures])
            await self.retry(message, delay, attempt + 1, _failure_headers(message, outcome))
        elif outcome.busy or outcome.store_unavailable:
            await self.retry(message, BUSY_DELAY, attempt, _settled_header(outcome))
        await message.ack()

    def _delay_for(self, attempt: int, errors: list[BaseException | None]) -> float:
        tiers = self._settings.retry_delays
        asked = [e.delay for e in errors if isinstance(e, Retry) and e.delay is not None]
        if asked:
            steps = sorted({*RETRY_LADDER, *tiers})
            return next((step for step in steps if step >= max(asked)), steps[-1])
        return tiers[min(attempt - 1, len(tiers) - 1)]

    async def retry(
        self, message: AbstractIncomingMessage, delay: float, attempt: int, extra: dict[str, Any]
    ) -> None:
        delay_ms = max(1, int(delay * 1000))
        if delay_ms not in self._delay_queues:
            await declare_delay(self._channel, self._topology, delay_ms)
            self._delay_queues.add(delay_ms)
        await self._channel.default_exchange.publish(
            copy_of(message, {**extra, headers.ATTEMPT: attempt}),
            routing_key=self._topology.delay_queue(delay_ms),
            mandatory=True,
        )

    async def undecodable(self, message: AbstractIncomingMessage, error: DecodeError) -> None:
        """A message that is not a callback: dead-letter it at once, never requeue it."""
        log.error("callback.undecodable", message_id=message.message_id, error=str(error))
        try:
            await self.dead_letter(
                message,
                "undecodable",
                {headers.ERROR_TYPE: "DecodeError", headers.ERROR: _text(error),
                 headers.LAST_FAILURE: now_iso()},
            )  # fmt: skip
        except (AMQPError, ChannelInvalidStateError, RuntimeError):
            await message.reject(requeue=False)  # the work queue's own dead-letter route
            return
        await message.ack()

    async def dead_letter(
        self, message: AbstractIncomingMessage, reason: str, extra: dict[str, Any]
    ) -> None:
        """Publish a copy to the dead-letter exchange with headers saying why, confirmed."""
        exchange = await self._channel.get_exchange(self._topology.dead_exchange, ensure=False)
        await exchange.publish(
            copy_of(message, {**extra, headers.DEAD_REASON: reason}),
            routing_key=message.routing_key or "",
            mandatory=True,  # an unbound dead-letter queue must fail loudly, not drop it
        )


def attempt_of(message: AbstractIncomingMessage) -> int:
    value = (message.headers or {}).get(headers.ATTEMPT, 1)
    return value if isinstance(value, int) and value >= 1 else 1


def copy_of(message: AbstractIncomingMessage, extra: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``extra`` headers merged in."""
    return aio_pika.Message(
        message.body,
        headers={**(message.headers or {}), **extra},
        content_type=message.content_type or "application/json",
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def settled_of(message: AbstractIncomingMessage) -> frozenset[str]:
    value = (message.headers or {}).get(headers.SETTLED, "")
    text = value.decode() if isinstance(value, bytes) else str(value)
    return frozenset(name for name in text.split(",") if name)


def _settled_header(outcome: Outcome) -> dict[str, Any]:
    return {headers.SETTLED: ",".join(sorted(outcome.settled))}


def _failure_headers(message: AbstractIncomingMessage, outcome: Outcome) -> dict[str, Any]:
    failures = outcome.failures
    first = failures[0].error
    stamp = now_iso()
    return {
        **_settled_header(outcome),
        headers.FAILED_HANDLERS: ",".join(f.handler.name for f in failures),
        headers.ERROR_TYPE: type(first).__name__,
        headers.ERROR: _text(first),
        headers.FIRST_FAILURE: (message.headers or {}).get(headers.FIRST_FAILURE, stamp),
        headers.LAST_FAILURE: stamp,
    }


def _text(error: BaseException | None) -> str:
    return (str(error) or type(error).__name__)[:MAX_ERROR_CHARS]
