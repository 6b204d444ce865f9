"""settle: the one owner of every ack, nack and publish-to-retry of a delivery.

:func:`worker.decide.decide` says what becomes of a delivery; :class:`Settler` carries it out
and logs one ``callback.handled`` line per handler. A retry or deferral is a copy of the
message published (with confirms) to a delay queue whose TTL dead-letters it back into the
work queue, carrying ``x-sink-attempt`` and ``x-sink-deliveries``; a dead letter is a copy
published (confirmed, mandatory) to the dead-letter exchange. The delivery is acked only after
those publishes are confirmed: a crash in between means a redelivery, which the per-handler
dedup marks make harmless.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from callback_sink.sink import headers, logs
from callback_sink.sink.errors import DecodeError
from callback_sink.sink.metrics import WorkerMetrics
from callback_sink.sink.topology import Topology, declare_delay
from callback_sink.worker.decide import Decision, Delivery, Republish
from callback_sink.worker.pipeline import HandlerResult, Outcome, Result

log = logs.get("worker")

#: Longest error message kept in a dead letter's headers.
MAX_ERROR_CHARS = 500
#: ``callback.handled`` outcomes as counted in ``callback_sink_worker_handled_total``.
METRIC_OUTCOMES = {"ok": "ok", "duplicate": "duplicate", "failed": "retry", "dead": "dead_letter"}
#: What a failed settle step can raise when the channel went away under it.
CHANNEL_ERRORS = (AMQPError, ChannelInvalidStateError, RuntimeError)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Settler:
    def __init__(
        self, channel: AbstractChannel, topology: Topology, metrics: WorkerMetrics | None = None
    ) -> None:
        self._channel = channel
        self._topology = topology
        self._metrics = metrics
        self._delay_queues: set[int] = set()

    async def settle(
        self,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        delivery: Delivery,
        decision: Decision,
    ) -> None:
        """Carry out ``decision``; on any failure hand the message back (never hold it)."""
        try:
            await self.interim(message, outcome, delivery, decision)
            if decision.republish is not None:
                await self._republish(message, outcome, delivery, decision.republish, decision)
            await message.ack()
        except Exception as exc:
            log.warning("callback.settle_failed", error=f"{type(exc).__name__}: {exc}")
            await self.requeue(message)

    async def interim(
        self,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        delivery: Delivery,
        decision: Decision,
    ) -> None:
        """Log this round and dead-letter the handlers that gave up. :meth:`settle` goes on to
        republish and ack; ordered mode calls this alone between two rounds of one delivery
        (the rest is retried in place, not republished)."""
        log_outcome(outcome, delivery, decision, self._metrics)
        if decision.dead_letter is not None:
            await self._dead_letter(message, outcome, delivery, decision)

    async def requeue(self, message: AbstractIncomingMessage) -> None:
        """Hand the delivery back to the broker (it counts toward the delivery budget). If the
        channel died, the broker redelivers it anyway."""
        with contextlib.suppress(*CHANNEL_ERRORS):
            await message.nack(requeue=True)

    async def undecodable(self, message: AbstractIncomingMessage, error: DecodeError) -> None:
        """A message that is not a callback: dead-letter it at once, never requeue it."""
        log.error("callback.undecodable", message_id=message.message_id, error=str(error))
        extra = {headers.ERROR_TYPE: "DecodeError", headers.ERROR: _text(error),
                 headers.LAST_FAILURE: now_iso(), headers.DEAD_REASON: "undecodable"}  # fmt: skip
        try:
            await self._publish_dead(message, extra)
        except CHANNEL_ERRORS:
            with contextlib.suppress(*CHANNEL_ERRORS):
                await message.reject(requeue=False)  # the work queue's own dead-letter route
            return
        with contextlib.suppress(*CHANNEL_ERRORS):
            await message.ack()

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        delivery: Delivery,
        decision: Decision,
    ) -> None:
        dead = decision.dead_letter
        assert dead is not None
        # The dead copy is about its own handlers: whatever the retry copy owns is settled
        # for it, so a replay runs only the handlers that died.
        others = decision.republish.handlers if decision.republish else ()
        extra = {
            **_failure_headers(message, dead.failures),
            headers.SETTLED: _joined(outcome.settled | set(others)),
            headers.ATTEMPT: delivery.attempt,
            headers.DELIVERIES: delivery.deliveries,
            headers.DEAD_REASON: dead.reason,
        }
        if not dead.failures:
            extra[headers.LAST_FAILURE] = now_iso()
        await self._publish_dead(message, extra)

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        outcome: Outcome,
        delivery: Delivery,
        plan: Republish,
        decision: Decision,
    ) -> None:
        extra = {
            **(_failure_headers(message, plan.failures) if plan.failures else {}),
            headers.SETTLED: _joined(retry_settled(outcome, decision)),
            headers.ATTEMPT: plan.attempt,
            headers.DELIVERIES: delivery.deliveries,
        }
        delay_ms = max(1, int(plan.delay * 1000))
        if delay_ms not in self._delay_queues:
            await declare_delay(self._channel, self._topology, delay_ms)
            self._delay_queues.add(delay_ms)
        await self._channel.default_exchange.publish(
            copy_of(message, extra),
            routing_key=self._topology.delay_queue(delay_ms),
            mandatory=True,
        )

    async def _publish_dead(self, message: AbstractIncomingMessage, extra: dict[str, Any]) -> None:
        exchange = await self._channel.get_exchange(self._topology.dead_exchange, ensure=False)
        await exchange.publish(
            copy_of(message, extra),
            routing_key=message.routing_key or "",
            mandatory=True,  # an unbound dead-letter queue must fail loudly, not drop it
        )


def retry_settled(outcome: Outcome, decision: Decision) -> frozenset[str]:
    """The handlers a retry or deferral copy skips: those settled by now, and those this
    decision dead-lettered (their dead letter owns them: a replay runs them, not the copy)."""
    given_up = decision.dead_letter.handlers if decision.dead_letter else ()
    return outcome.settled | frozenset(given_up)


def log_outcome(
    outcome: Outcome, delivery: Delivery, decision: Decision, metrics: WorkerMetrics | None = None
) -> None:
    """One ``callback.handled`` line per handler: ``ok``, ``duplicate``, ``failed`` (will be
    retried) or ``dead``; deferrals at debug; a forgery or an exhausted budget at error.
    Each is counted in ``metrics`` too (``retry``, ``dead_letter``, ``deferred``)."""
    metrics = metrics or _UNCOUNTED
    event = outcome.event
    if decision.forged_as is not None:
        log.error("callback.forged", call_id=event.call_id, event_name=event.name,
                  first_seen_as=decision.forged_as)  # fmt: skip
        return
    dead = decision.dead_letter
    if dead is not None and dead.reason == "delivery-limit":
        log.error("callback.delivery_limit", call_id=event.call_id, event_name=event.name,
                  deliveries=delivery.deliveries)  # fmt: skip
        for handler in dead.handlers:
            metrics.handled(handler, "dead_letter")
    dead_names = set(dead.handlers) if dead else set()
    for r in outcome.results:
        if r.result in (Result.BUSY, Result.UNAVAILABLE):
            log.debug("callback.deferred", handler=r.handler.name, reason=r.result.value)
            metrics.handled(r.handler.name, "deferred")
            continue
        fields: dict[str, Any] = {}
        if r.error is not None:
            fields = {"error_type": type(r.error).__name__, "error": _text(r.error)}
        failed = r.result is Result.FAILED
        name = "dead" if failed and r.handler.name in dead_names else r.result.value
        metrics.handled(r.handler.name, METRIC_OUTCOMES.get(name, name))
        if r.result is not Result.DUPLICATE:
            metrics.ran(r.handler.name, r.duration_ms / 1000)
        log.info("callback.handled", call_id=event.call_id, event_name=event.name,
                 handler=r.handler.name, outcome=name, duration_ms=r.duration_ms,
                 attempt=delivery.attempt, **fields)  # fmt: skip


#: Where the counts go when nobody asked for them (the testing kit, unit tests).
_UNCOUNTED = WorkerMetrics()


def delivery_of(message: AbstractIncomingMessage) -> Delivery:
    """The attempt and delivery counters of a delivery, from its headers: ours, carried
    across republishes, plus the broker's own redelivery count of this copy."""
    found = message.headers or {}
    attempt = found.get(headers.ATTEMPT, 1)
    carried = found.get(headers.DELIVERIES, 0)
    redelivered = found.get("x-delivery-count")  # quorum queues count returns of this copy
    broker = redelivered if isinstance(redelivered, int) else int(bool(message.redelivered))
    return Delivery(
        attempt=attempt if isinstance(attempt, int) and attempt >= 1 else 1,
        deliveries=(carried if isinstance(carried, int) and carried >= 0 else 0) + broker + 1,
    )


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


def _joined(names: set[str] | frozenset[str]) -> str:
    return ",".join(sorted(names))


def _failure_headers(
    message: AbstractIncomingMessage, failures: tuple[HandlerResult, ...]
) -> dict[str, Any]:
    if not failures:
        return {}
    first = failures[0].error
    stamp = now_iso()
    return {
        headers.FAILED_HANDLERS: ",".join(f.handler.name for f in failures),
        headers.ERROR_TYPE: type(first).__name__,
        headers.ERROR: _text(first),
        headers.FIRST_FAILURE: (message.headers or {}).get(headers.FIRST_FAILURE, stamp),
        headers.LAST_FAILURE: stamp,
    }


def _text(error: BaseException | None) -> str:
    return (str(error) or type(error).__name__)[:MAX_ERROR_CHARS]
