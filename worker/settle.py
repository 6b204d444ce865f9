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
import functools
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from callback_sink.sink import headers, logs
from callback_sink.sink.errors import DecodeError, InboxDuplicate
from callback_sink.sink.metrics import WorkerMetrics
from callback_sink.sink.outcomes import LEVELS, Outcome
from callback_sink.sink.topology import Topology, declare_delay
from callback_sink.worker.acks import Acks
from callback_sink.worker.decide import Delivery, Republish, Settlement
from callback_sink.worker.pipeline import DeliveryResult, HandlerResult, Result

log = logs.get("worker")

#: Longest error message kept in a dead letter's headers.
MAX_ERROR_CHARS = 500
#: What a failed settle step can raise when the channel went away under it.
CHANNEL_ERRORS = (AMQPError, ChannelInvalidStateError, RuntimeError)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Settler:
    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology,
        metrics: WorkerMetrics | None = None,
        *,
        log_ok: bool = True,
    ) -> None:
        self._channel = channel
        self._topology = topology
        self._metrics = metrics
        #: ``SINK_LOG_ACCEPTED``: False keeps the ``ok`` and ``duplicate`` lines out.
        self._log_ok = log_ok
        self._delay_queues: set[int] = set()
        #: Acks of one tick go out as one ``basic.ack multiple=True`` (:mod:`worker.acks`).
        self._acks = Acks()

    async def settle(
        self,
        message: AbstractIncomingMessage,
        ran: DeliveryResult,
        delivery: Delivery,
        decision: Settlement,
    ) -> None:
        """Carry out ``decision``; on any failure hand the message back (never hold it)."""
        try:
            await self.interim(message, ran, delivery, decision)
            if decision.republish is not None:
                await self._republish(message, ran, delivery, decision.republish, decision)
            await self._acks.ack(message)
        except Exception as exc:
            log.warning("callback.settle_failed", error_type=type(exc).__name__, error=_text(exc),
                        exc_info=exc)  # fmt: skip
            await self.requeue(message)

    async def interim(
        self,
        message: AbstractIncomingMessage,
        ran: DeliveryResult,
        delivery: Delivery,
        decision: Settlement,
    ) -> None:
        """Log this round and dead-letter the handlers that gave up. :meth:`settle` goes on to
        republish and ack; ordered mode calls this alone between two rounds of one delivery
        (the rest is retried in place, not republished)."""
        log_outcome(ran, delivery, decision, self._metrics, log_ok=self._log_ok)
        if decision.dead_letter is not None:
            await self._dead_letter(message, ran, delivery, decision)

    async def requeue(self, message: AbstractIncomingMessage) -> None:
        """Hand the delivery back to the broker (it counts toward the delivery budget). If the
        channel died, the broker redelivers it anyway."""
        with contextlib.suppress(*CHANNEL_ERRORS):
            await message.nack(requeue=True)
        self._acks.settled(message)

    async def undecodable(self, message: AbstractIncomingMessage, error: DecodeError) -> None:
        """A message that is not a callback: dead-letter it at once, never requeue it."""
        log.error("callback.undecodable", message_id=message.message_id, error_type="DecodeError",
                  error=str(error))  # fmt: skip
        extra = {headers.ERROR_TYPE: "DecodeError", headers.ERROR: _text(error),
                 headers.LAST_FAILURE: now_iso(), headers.DEAD_REASON: "undecodable"}  # fmt: skip
        try:
            await self._publish_dead(message, extra)
        except CHANNEL_ERRORS:
            with contextlib.suppress(*CHANNEL_ERRORS):
                await message.reject(requeue=False)  # the work queue's own dead-letter route
            self._acks.settled(message)
            return
        with contextlib.suppress(*CHANNEL_ERRORS):
            await message.ack()
        self._acks.settled(message)

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        ran: DeliveryResult,
        delivery: Delivery,
        decision: Settlement,
    ) -> None:
        dead = decision.dead_letter
        assert dead is not None
        # The dead copy is about its own handlers: whatever the retry copy owns is settled
        # for it, so a replay runs only the handlers that died.
        others = decision.republish.handlers if decision.republish else ()
        extra = {
            **_failure_headers(message, dead.failures),
            headers.SETTLED: _joined(ran.settled | set(others)),
            headers.ATTEMPT: delivery.attempt,
            headers.DELIVERIES: delivery.deliveries,
            headers.DEAD_REASON: dead.reason,
        }
        if not dead.failures:  # a crash loop: the handlers it kept from running
            extra[headers.LAST_FAILURE] = now_iso()
            extra[headers.FAILED_HANDLERS] = ",".join(dead.handlers)
        await self._publish_dead(message, extra)

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        ran: DeliveryResult,
        delivery: Delivery,
        plan: Republish,
        decision: Settlement,
    ) -> None:
        extra = {
            **(_failure_headers(message, plan.failures) if plan.failures else {}),
            headers.SETTLED: _joined(retry_settled(ran, decision)),
            headers.ATTEMPT: plan.attempt,
            headers.DELIVERIES: delivery.deliveries,
        }
        if plan.suspect or headers.SUSPECT in (message.headers or {}):
            extra[headers.SUSPECT] = int(plan.suspect)  # a retry copy is no suspect any more
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


def retry_settled(ran: DeliveryResult, decision: Settlement) -> frozenset[str]:
    """The handlers a retry or deferral copy skips: those settled by now, and those this
    decision dead-lettered (their dead letter owns them: a replay runs them, not the copy)."""
    given_up = decision.dead_letter.handlers if decision.dead_letter else ()
    return ran.settled | frozenset(given_up)


def log_outcome(
    ran: DeliveryResult,
    delivery: Delivery,
    decision: Settlement,
    metrics: WorkerMetrics | None = None,
    *,
    log_ok: bool = True,
) -> None:
    """One ``callback.handled`` line per handler, its ``outcome`` (:class:`~sink.outcomes.Outcome`)
    at that outcome's level (:data:`~sink.outcomes.LEVELS`): ``ok`` and ``duplicate`` at info,
    ``retry`` at warning and ``dead_letter`` at error (both with the traceback); ``deferred``
    is its own ``callback.deferred`` line at debug (the handler's ``callback.handled`` line
    comes when it runs). A forgery is one ``callback.forged`` warning, a crash loop one
    ``callback.crash_loop`` error (``callback.delivery_limit`` at ``SINK_MAX_DELIVERIES``).
    Each is counted in ``metrics`` under the same name.
    ``log_ok`` False (``SINK_LOG_ACCEPTED=false``): no line for ``ok`` and ``duplicate``, which
    are still counted."""
    metrics = metrics or _uncounted()
    event = ran.event
    about = {"call_id": event.call_id, "event_name": event.name}
    if decision.forged_as is not None:
        _log(Outcome.FORGED, "callback.forged", **about, first_seen_as=decision.forged_as,
             handlers=list(ran.pending))  # fmt: skip
        for name in ran.pending:
            metrics.handled(name, Outcome.FORGED)
        return
    dead = decision.dead_letter
    if dead is not None and dead.reason == "crash-loop":
        _log(Outcome.DEAD_LETTER, "callback.crash_loop", **about, deaths=ran.crash_deaths,
             handlers=list(dead.handlers))  # fmt: skip
        for name in dead.handlers:
            metrics.handled(name, Outcome.DEAD_LETTER)
    if dead is not None and dead.reason == "delivery-limit":
        _log(Outcome.DEAD_LETTER, "callback.delivery_limit", **about,
             deliveries=delivery.deliveries, handlers=list(dead.handlers))  # fmt: skip
        for name in dead.handlers:
            metrics.handled(name, Outcome.DEAD_LETTER)
    for r in ran.results:
        outcome = decision.outcome_of(r)
        metrics.handled(r.handler.name, outcome)
        if outcome is Outcome.DEFERRED:  # not run: its own line, the run's line comes later
            _log(outcome, "callback.deferred", **about, handler=r.handler.name,
                 reason=r.result.value)  # fmt: skip
            continue
        fields: dict[str, Any] = {}
        if r.result is Result.FAILED and r.error is not None:
            fields = {"error_type": type(r.error).__name__, "error": _text(r.error),
                      "exc_info": r.error}  # fmt: skip
        elif isinstance(r.error, InboxDuplicate):  # its transaction's inbox row said so
            fields = {"found_by": "inbox"}
        if outcome is Outcome.DEAD_LETTER and dead is not None:  # why, as x-sink-dead-reason
            fields["dead_reason"] = dead.reason
        if r.result is not Result.DUPLICATE:
            metrics.ran(r.handler.name, r.duration_ms / 1000)
        if not log_ok and outcome in (Outcome.OK, Outcome.DUPLICATE):
            continue
        _log(outcome, "callback.handled", **about, handler=r.handler.name,
             duration_ms=r.duration_ms, attempt=delivery.attempt, **fields)  # fmt: skip


def _log(outcome: Outcome, event: str, **fields: Any) -> None:
    """``event`` with its ``outcome`` field, at that outcome's level."""
    getattr(log, LEVELS[outcome])(event, outcome=outcome.value, **fields)


@functools.cache
def _uncounted() -> WorkerMetrics:
    """Where the counts go when nobody asked for them (the testing kit, unit tests). Built
    on first use, never at import: in multiprocess mode a worker gauge, once built, is
    exported by the process that built it, and the ingress imports this module too."""
    return WorkerMetrics()


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
        headers.TRACEBACK: logs.traceback_of(first, logs.TRACEBACK_HEADER_CHARS) if first else "",
        headers.FIRST_FAILURE: (message.headers or {}).get(headers.FIRST_FAILURE, stamp),
        headers.LAST_FAILURE: stamp,
    }


def _text(error: BaseException | None) -> str:
    return (str(error) or type(error).__name__)[:MAX_ERROR_CHARS]
