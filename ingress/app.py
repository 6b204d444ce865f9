"""The aiohttp application: ``POST /callbacks``, ``GET /healthz``, ``GET /readyz``.

A callback goes through :func:`accept`: client network → content type → size and read
deadline → JSON shape → signature → age → durable (:func:`make_durable`: a confirmed publish,
or else an fsynced spool record). Any refusal is a :class:`Rejected` with its HTTP status,
counted and logged as ``callback.rejected`` with the reason and, once the body parsed, the
callback's ``call_id`` and ``event_name`` (sampled per reason under a flood, see
:mod:`ingress.refusals`); nothing refused reaches the queue. Each answered
callback is logged once as ``callback.accepted`` with ``durable`` saying where it is:
``broker`` or ``spool``. Over ``SINK_MAX_INFLIGHT`` requests at once, a fast 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from callback_sink.ingress.backfill import Exemptions
from callback_sink.ingress.budget import BodyBudget
from callback_sink.ingress.checks import check_callback, read_body
from callback_sink.ingress.drainer import Drainer
from callback_sink.ingress.expect import expect_continue
from callback_sink.ingress.exporter import metrics_endpoint, spool_gauges, spool_totals
from callback_sink.ingress.limits import (
    ConnectionGuard,
    Counters,
    IngressRunner,
    close_worn,
    connection_cap,
    handler_args,
)
from callback_sink.ingress.memory import trim_memory
from callback_sink.ingress.network import Network, forwarded_for
from callback_sink.ingress.publisher import Publisher
from callback_sink.ingress.recent import RecentCallbacks
from callback_sink.ingress.refusals import Refusals
from callback_sink.ingress.sampling import quiet_server_logs
from callback_sink.ingress.spool import Record, Spool
from callback_sink.ingress.supervisor import crash_loop
from callback_sink.sink import logs
from callback_sink.sink.apps import all_secrets
from callback_sink.sink.errors import DecodeError, PublishError, Rejected, SpoolError, SpoolFull
from callback_sink.sink.events import Event, from_document, parse
from callback_sink.sink.metrics import IngressMetrics
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology

log = logs.get("ingress")
#: ``callback.accepted``, once per callback: rendered in one step (:class:`logs.HotLine`).
accepted_line = logs.HotLine("ingress", "callback.accepted")

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey("publisher", Publisher)
SPOOL = web.AppKey("spool", Spool)
DRAINER = web.AppKey("drainer", Drainer)
#: Set when a shutdown began: /readyz turns false so load balancers stop sending.
STOPPING = web.AppKey("stopping", asyncio.Event)
EXEMPTIONS = web.AppKey("exemptions", Exemptions)

#: Easemob ignores the body of a 200 but refuses one over 1,000 characters.
OK_BODY = b'{"status":"ok"}'
JSON_TYPES = ("application/json",)
#: Beyond the confirm time-out, how long a stopping drainer may take to commit its batch.
DRAINER_STOP_MARGIN = 5.0
#: Easemob generates 32-character secrets; a short one is guessable offline from one capture.
SHORT_SECRET = 16


@dataclass(frozen=True, slots=True)
class Accepted:
    """A callback made durable: where (``broker`` or ``spool``), and why not the broker."""

    event: Event
    durable: Literal["broker", "spool"]
    broker_error: str | None = None


class Edge:
    """Per-process state of the HTTP edge: network rules, limits, counters and metrics,
    refusals."""

    def __init__(self, settings: Settings, metrics: IngressMetrics) -> None:
        self.settings = settings
        self.network = Network(settings.allowed_networks, settings.trusted_proxies)
        self.counters = Counters()
        self.metrics = metrics
        self.refusals = Refusals(self.counters, settings.reject_log_rate, metrics)
        self.budget = BodyBudget(settings.body_budget_bytes)
        self.guard = ConnectionGuard(settings.max_connections, settings.read_timeout_s,
                                     self._connection_refused, self.network)  # fmt: skip
        self.inflight = 0
        self.recent = RecentCallbacks(settings.edge_dedup_size, settings.reject_log_rate)

    def _connection_refused(self, status: int | None, reason: str, remote: str | None) -> None:
        self.refusals.record(status, reason, remote=remote)


EDGE = web.AppKey("edge", Edge)


async def accept(request: web.Request, settings: Settings, app: web.Application) -> Accepted | None:
    """Validate one callback and make it durable; raise :class:`Rejected` otherwise. None: a
    re-post of a callback made durable here lately (:mod:`ingress.recent`), not stored again."""
    doc, body = await admit(request, settings, app)
    event, recent = from_document(doc), app[EDGE].recent
    if recent.repeated(event):
        return None
    ordered = settings.ordering != "none"
    accepted = await make_durable(event, body, app[PUBLISHER], app[SPOOL], ordered=ordered)
    recent.remember(event)
    return accepted


async def admit(
    request: web.Request, settings: Settings, app: web.Application
) -> tuple[dict[str, Any], bytes]:
    """Every check of a callback (the pre-send ones too) up to, not including, durability:
    network, content type, size and deadline, JSON shape, signature, age."""
    network = app[EDGE].network
    if network.checks:
        client = network.client(request.remote, forwarded_for(request.headers))
        if not network.allows(client):
            raise Rejected(403, "client is not in SINK_ALLOWED_NETWORKS")  # its address: remote
    if request.content_type not in JSON_TYPES:
        content_type = {"content_type": request.content_type}
        raise Rejected(415, "content type is not application/json", details=content_type)
    body = await read_body(request, settings, app[EDGE].budget)
    try:
        doc = parse(body)
    except DecodeError as exc:  # no call_id to log: the reason says why the body is not one
        reason, _, detail = str(exc).partition(": ")
        raise Rejected(400, reason, details={"detail": detail} if detail else None) from None
    try:
        adopted = await check_callback(doc, settings, app[EXEMPTIONS])
    except Rejected as exc:
        exc.call_id, exc.event_name = doc["callId"], from_document(doc).name
        raise
    return doc, body if adopted is None else orjson.dumps(doc)  # now naming its app


async def make_durable(
    event: Event, body: bytes, publisher: Publisher, spool: Spool, *, ordered: bool = False
) -> Accepted:
    """A confirmed publish; failing that, a spool record on stable storage; failing that
    (spool full or broken), 503: the only case where an outage costs Easemob a retry."""
    try:
        if ordered and spool.records:
            # Ordered mode: while older callbacks wait in the spool, a newer one must not
            # overtake them on the broker; it joins the spool behind them.
            raise PublishError("ordered mode: the spool is draining")
        await publisher.publish(event.name, event.call_id, body, event)
        return Accepted(event, "broker")
    except PublishError as exc:
        broker_error = str(exc)
    try:
        await spool.append(Record(event.name, event.call_id, body))
    except SpoolError as exc:
        details = {"error": str(exc), "broker_error": broker_error}
        reason = "spool full" if isinstance(exc, SpoolFull) else "spool unavailable"
        raise Rejected(503, reason, call_id=event.call_id, event_name=event.name, signed=True,
                       details=details) from exc  # fmt: skip
    return Accepted(event, "spool", broker_error)


def over_capacity(request: web.Request, started: float) -> web.Response | None:
    """A fast 503 when ``SINK_MAX_INFLIGHT`` requests are in flight already, else None."""
    edge = request.app[EDGE]
    if edge.inflight < edge.settings.max_inflight:
        return None
    refusal = Rejected(503, "too many requests in flight")
    return edge.refusals.respond(refusal, _remote(request), started)


async def receive(request: web.Request) -> web.Response:
    app = request.app
    edge = app[EDGE]
    started = time.perf_counter()
    if (refused := over_capacity(request, started)) is not None:
        return refused
    edge.inflight += 1
    try:
        accepted = await accept(request, edge.settings, app)
    except Rejected as exc:
        return edge.refusals.respond(exc, _remote(request), started)
    finally:
        edge.inflight -= 1
        edge.budget.release(request)
    edge.counters.requests[200] += 1
    duration = time.perf_counter() - started
    metrics = edge.metrics
    metrics.answered(200, signed=True)
    if accepted is None:  # durable already: edge.recent counted and logged it
        return web.Response(body=OK_BODY, content_type="application/json")
    metrics.accepted[accepted.durable].inc()
    metrics.latency.observe(duration)
    if edge.settings.log_accepted:  # SINK_LOG_ACCEPTED=false: the metrics count it
        event = accepted.event
        extra = {"broker_error": accepted.broker_error} if accepted.broker_error else {}
        accepted_line(
            call_id=event.call_id,
            event_name=event.name,
            status=200,
            durable=accepted.durable,
            duration_ms=round(duration * 1000, 3),
            **extra,
        )
    return web.Response(body=OK_BODY, content_type="application/json")


def _remote(request: web.Request) -> str:
    network = request.app[EDGE].network
    return network.client(request.remote, forwarded_for(request.headers)).text


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: not stopping, the spool healthy, and able to make a callback durable: a
    publisher whose channel is open and not nacking, or room in the spool for the largest
    accepted body. An ingress that spools is ready on purpose: taking it out of a load
    balancer during a broker outage would turn callbacks into non-200 answers, which Easemob
    drops after one retry. ``spool_records`` and ``spool_bytes`` count every process of the
    ingress; ``process_spool_records``, this one's."""
    app = request.app
    spool, publisher, edge = app[SPOOL], app[PUBLISHER], app[EDGE]
    spool_problem = spool.health()
    broker = publisher.ready
    stopping = app[STOPPING].is_set()
    room = spool.free >= app[SETTINGS].body_limit
    records, size = spool_totals(spool)
    looping = crash_loop(spool.directory.parent)  # the supervisor's children keep dying
    ready = not stopping and spool_problem is None and (broker or room) and looping is None
    body: dict[str, Any] = {
        "ready": ready,
        "broker": broker,
        "publisher": publisher.state,
        "spool_records": records,
        "spool_bytes": size,
        "process_spool_records": spool.records,
        "spool_problem": spool_problem,
        "stopping": stopping,
        "connections": edge.guard.open,
        "inflight": edge.inflight,
        "body_bytes": edge.budget.used,
        "crash_loop": looping,
    }
    return web.json_response(body, status=200 if ready else 503)


def create_app(settings: Settings, metrics: IngressMetrics | None = None) -> web.Application:
    """Build the ingress application; the spool, the broker connection and the drainer live
    in its cleanup contexts (opened in that order, closed in the reverse one). Serve it with
    :func:`make_runner`, which adds the connection cap and the request-head deadline.
    ``metrics``: where it counts (a service passes the process's; by default a registry of
    the application's own)."""
    settings.require_secrets()
    short = sum(
        len(secret) < SHORT_SECRET for secret in all_secrets(settings.apps, settings.secrets)
    )
    if short:
        log.warning("ingress.short_secrets", count=short, minimum_length=SHORT_SECRET)
    # aiohttp's own limit stays above ours so that our 413 (with its log line) answers first.
    app = web.Application(
        client_max_size=settings.body_limit + 1, handler_args=handler_args(settings)
    )
    app[SETTINGS] = settings
    app[STOPPING] = asyncio.Event()
    metrics = metrics or IngressMetrics()
    app[EDGE] = Edge(settings, metrics)
    topology = Topology.of(settings)
    app[PUBLISHER] = Publisher.of(settings, topology)
    app[SPOOL] = Spool(settings.spool_dir, settings.spool_max_bytes)
    app[DRAINER] = Drainer(app[SPOOL], app[PUBLISHER])
    app[EXEMPTIONS] = Exemptions(settings)
    app.on_cleanup.append(lambda app: app[EXEMPTIONS].close())
    app.on_response_prepare.append(close_worn(settings.keepalive_max_requests))
    app.cleanup_ctx.extend(
        [_edge, _spool, spool_gauges(metrics, app[SPOOL]), _broker, _drainer, trim_memory]
    )
    app.router.add_post(settings.path, receive, expect_handler=expect_continue(app[EDGE]))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint(metrics))
    return app


def make_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner to serve :func:`create_app`'s application with (``web.AppRunner``'s
    arguments): its sites refuse connections over the cap and close slow request heads."""
    guard = app[EDGE].guard
    guard.max_connections = connection_cap(guard.max_connections)
    return IngressRunner(app, guard, **kwargs)


async def _edge(app: web.Application) -> AsyncIterator[None]:
    """Sampled logs for aiohttp's and the accept loop's errors; a summary of what the
    samplers held back, once a second."""
    refusals = app[EDGE].refusals
    with quiet_server_logs() as server_errors:

        async def report() -> None:
            while True:
                await asyncio.sleep(1.0)
                refusals.report_suppressed()
                app[EDGE].recent.report_suppressed()
                for key, count in server_errors.drain().items():
                    source = key[0] if isinstance(key, tuple) else key
                    log.warning("log.suppressed", source=str(source), suppressed=count)

        reporter = asyncio.create_task(report())
        yield
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        refusals.report_suppressed()


async def _spool(app: web.Application) -> AsyncIterator[None]:
    """Open the spool (recovering what a crashed ingress left); close it last."""
    async with app[SPOOL]:
        yield


async def _broker(app: web.Application) -> AsyncIterator[None]:
    """Connect in the background; start-up waits for the first attempt only."""
    publisher = app[PUBLISHER]
    await publisher.start()
    yield
    await publisher.close()


async def _drainer(app: web.Application) -> AsyncIterator[None]:
    """Drain the spool while the app runs; on shutdown, stop after the batch in hand."""
    drainer = app[DRAINER]
    drainer.start()
    yield
    await drainer.stop(grace=app[SETTINGS].publish_timeout + DRAINER_STOP_MARGIN)
