"""``POST /presend``: Easemob's pre-send (moderation) callback, answered inline.

Easemob waits for this answer before delivering a message a client sent (200 ms by default,
then it applies the rule's default policy), so nothing on the answer path waits for RabbitMQ:

    admit (network, size, JSON, signature, age: :func:`ingress.app.admit`)
      → decide (the ``@presend`` chain within ``SINK_PRESEND_BUDGET_MS``, else the default)
      → answer ``{"valid": …, "code": …, "payload": …}``
      → record, in the background: ``presend:verdict`` through the ingress's durable path
        (a confirmed publish, else the spool)

A refused request (401 for a bad signature) runs nothing and records nothing. A record
whose spool write fails is retried every second, and a stopping ingress awaits every record
still in flight before it closes the broker connection and the spool (:meth:`Recorder.close`,
in the application's cleanup); only past ``SINK_PRESEND_RECORD_QUEUE`` waiting records are
new ones dropped, counted, and reported at stop with the ones still not durable.

:func:`install` adds the route, the chain and the recorder to an application built by
:func:`ingress.app.create_app`; the composition (:mod:`callback_sink.service`) loads the
chain from the handler modules, since the ingress cannot import them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiohttp import web

from callback_sink.ingress.app import (
    EDGE,
    PUBLISHER,
    SETTINGS,
    SPOOL,
    admit,
    make_durable,
    over_capacity,
)
from callback_sink.ingress.expect import expect_continue
from callback_sink.ingress.network import forwarded_for
from callback_sink.ingress.sampling import Sampler
from callback_sink.sink import logs
from callback_sink.sink.errors import Rejected
from callback_sink.sink.events import Event, from_document
from callback_sink.sink.presend import Decision, PresendFunc, Verdict, decide, record_document

log = logs.get("ingress")

#: The event name of the record published after each answer.
VERDICT_EVENT = "presend:verdict"
#: How often a record whose spool write failed (spool full, disk broken) is tried again.
RECORD_RETRY = 1.0
#: Beyond the confirm time-out, how long a stopping ingress waits for records in flight.
RECORD_STOP_MARGIN = 5.0


class Recorder:
    """Publishes ``presend:verdict`` records in background tasks, and awaits them on close.

    At most ``SINK_PRESEND_RECORD_QUEUE`` records wait at once: while RabbitMQ is away and
    the spool full, each waits (and is retried every second) until one of them gets through,
    so without a bound every answered request would hold its record until the outage ends.
    Past the bound the *new* record is dropped: the waiting ones are older, already in the
    middle of a publish or a spool write (not safely cancellable), and first in line for the
    room that frees. Drops and failures are logged sampled (``rate`` lines a second each,
    the rest counted in ``log.suppressed``); what was lost is summed up once, at close.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._pending: set[asyncio.Task[None]] = set()
        self._closing = False
        self.bound = app[SETTINGS].presend_record_queue
        self.counts: Counter[str] = Counter()
        self._sampler = Sampler(app[SETTINGS].reject_log_rate)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, callback: dict[str, Any], decision: Decision) -> None:
        """Make the record of ``callback`` and its answer durable, in the background (or drop
        it, counted, when ``SINK_PRESEND_RECORD_QUEUE`` records are waiting already)."""
        if len(self._pending) >= self.bound:
            self.counts["dropped"] += 1
            if self._sampler.admit("dropped"):
                log.error("presend.record_dropped", call_id=callback.get("callId"),
                          pending=len(self._pending), dropped=self.counts["dropped"])  # fmt: skip
            self._report_suppressed()
            return
        doc = record_document(callback, decision)
        event, body = from_document(doc), orjson.dumps(doc)
        task = asyncio.get_running_loop().create_task(self._make_durable(event, body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _make_durable(self, event: Event, body: bytes) -> None:
        app = self._app
        while True:
            try:
                ordered = app[SETTINGS].ordering != "none"
                accepted = await make_durable(
                    event, body, app[PUBLISHER], app[SPOOL], ordered=ordered
                )
            except Rejected as exc:  # the spool is full or broken, and so is the broker
                self.counts["failed"] += 1
                if self._closing:  # counted in the one presend.records_lost line
                    self.counts["lost"] += 1
                    return
                if self._sampler.admit(("failed", exc.reason)):
                    log.error("presend.record_failed", call_id=event.call_id,
                              event_name=event.name, reason=exc.reason,
                              retry_in=RECORD_RETRY, pending=len(self._pending))  # fmt: skip
                self._report_suppressed()
                await asyncio.sleep(RECORD_RETRY)
                continue
            self.counts[accepted.durable] += 1
            return

    def _report_suppressed(self) -> None:
        for key, count in self._sampler.drain().items():
            source = "presend.record_dropped" if key == "dropped" else "presend.record_failed"
            log.warning("log.suppressed", source=source, suppressed=count)

    async def close(self, grace: float) -> None:
        """Await the records in flight (at most ``grace`` seconds); what does not make it,
        and what was dropped over the bound, is logged once, with counts, as lost."""
        self._closing = True
        lost_before = self.counts["lost"]
        pending = set(self._pending)
        if pending:
            log.info("presend.records_flushing", records=len(pending))
            _, late = await asyncio.wait(pending, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            self.counts["lost"] += len(late)
        lost = self.counts["lost"] - lost_before
        if lost or self.counts["dropped"]:
            log.error("presend.records_lost", records=lost, dropped=self.counts["dropped"],
                      grace_s=grace)  # fmt: skip


class Presend:
    """The pre-send endpoint's state: the chain, its budget and default, and the recorder."""

    def __init__(self, app: web.Application, chain: Sequence[PresendFunc]) -> None:
        settings = app[SETTINGS]
        self.chain = tuple(chain)
        self.budget_s = settings.presend_budget_ms / 1000
        accept = settings.presend_default == "accept"
        self.default = Verdict.accept() if accept else Verdict.reject()
        self.recorder = Recorder(app)
        #: Answers by outcome (``accept``, ``reject``, ``default:<reason>``).
        self.answers: Counter[str] = Counter()
        self.sampler = Sampler(settings.reject_log_rate)

    def count(self, decision: Decision) -> None:
        if decision.source == "default":
            self.answers[f"default:{decision.reason}"] += 1
        else:
            self.answers["accept" if decision.valid else "reject"] += 1


PRESEND = web.AppKey("presend", Presend)


def install(app: web.Application, chain: Sequence[PresendFunc]) -> Presend:
    """Serve the pre-send callback on ``SINK_PRESEND_PATH`` with ``chain``; the recorder's
    records are awaited when the application stops, before the broker and spool close."""
    presend = Presend(app, chain)
    app[PRESEND] = presend
    expect = expect_continue(app[EDGE])
    app.router.add_post(app[SETTINGS].presend_path, receive, expect_handler=expect)
    app.cleanup_ctx.append(_recorder)
    log.info("presend.chain", functions=len(presend.chain), budget_ms=presend.budget_s * 1000,
             default=app[SETTINGS].presend_default)  # fmt: skip
    return presend


async def receive(request: web.Request) -> web.Response:
    app = request.app
    edge, presend = app[EDGE], app[PRESEND]
    started = time.perf_counter()
    if (refused := over_capacity(request, started)) is not None:
        return refused
    edge.inflight += 1
    try:
        doc, _ = await admit(request, edge.settings, app)
        event = from_document(doc)
        remaining = presend.budget_s - (time.perf_counter() - started)
        decision = await decide(presend.chain, event, remaining, presend.default)
    except Rejected as exc:
        return edge.refusals.respond(exc, _remote(request), started)
    finally:
        edge.inflight -= 1
        edge.budget.release(request)
    presend.count(decision)
    edge.counters.requests[200] += 1
    presend.recorder.record(doc, decision)
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    if decision.source == "default" and presend.sampler.admit(decision.reason):
        log.warning("presend.default", call_id=event.call_id, event_name=event.name,
                    reason=decision.reason,
                    error=decision.error, valid=decision.valid,
                    duration_ms=duration_ms)  # fmt: skip
    log.info("presend.answered", call_id=event.call_id, event_name=event.name,
             valid=decision.valid, source=decision.source, rejected_by=decision.rejected_by,
             duration_ms=duration_ms)  # fmt: skip
    return web.Response(body=decision.answer_body(), content_type="application/json")


def _remote(request: web.Request) -> str:
    network = request.app[EDGE].network
    return network.client(request.remote, forwarded_for(request.headers)).text


async def _recorder(app: web.Application) -> AsyncIterator[None]:
    yield
    settings = app[SETTINGS]
    with contextlib.suppress(asyncio.CancelledError):
        await app[PRESEND].recorder.close(settings.publish_timeout + RECORD_STOP_MARGIN)
