"""The aiohttp application: ``POST /callbacks``, ``GET /healthz``, ``GET /readyz``.

A callback goes through :func:`accept`: content type → size → JSON shape → signature →
durable (:func:`make_durable`: a confirmed publish, or else an fsynced spool record). Any
refusal is a :class:`Rejected` with its HTTP status, logged once as ``callback.rejected`` with
the reason (``spool.full``, at error level, when the broker failed and the spool is full);
nothing refused reaches the queue. Each answered callback is logged once as
``callback.accepted`` with ``durable`` saying where it is: ``broker`` or ``spool``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from structlog.contextvars import bound_contextvars

from ingress.drainer import Drainer
from ingress.publisher import Publisher
from ingress.spool import Record, Spool
from sink import logs
from sink.errors import DecodeError, PublishError, Rejected, SpoolError, SpoolFull
from sink.events import Event, from_document, parse
from sink.settings import Settings
from sink.signature import verify
from sink.topology import Topology

log = logs.get("ingress")

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey("publisher", Publisher)
SPOOL = web.AppKey("spool", Spool)
DRAINER = web.AppKey("drainer", Drainer)
#: Set when a shutdown began: /readyz turns false so load balancers stop sending.
STOPPING = web.AppKey("stopping", asyncio.Event)

#: Easemob ignores the body of a 200 but refuses one over 1,000 characters.
OK_BODY = b'{"status":"ok"}'
JSON_TYPES = ("application/json",)
READ_CHUNK = 64 * 1024
#: Beyond the confirm time-out, how long a stopping drainer may take to commit its batch.
DRAINER_STOP_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A callback made durable: where (``broker`` or ``spool``), and why not the broker."""

    event: Event
    durable: Literal["broker", "spool"]
    broker_error: str | None = None


async def accept(
    request: web.Request, settings: Settings, publisher: Publisher, spool: Spool
) -> Accepted:
    """Validate one callback and make it durable; raise :class:`Rejected` otherwise."""
    if request.content_type not in JSON_TYPES:
        raise Rejected(415, f"content type {request.content_type!r} is not application/json")
    body = await read_limited(request, settings.body_limit)
    try:
        doc = parse(body)
    except DecodeError as exc:
        raise Rejected(400, str(exc)) from None
    if not verify(doc["callId"], doc["timestamp"], doc["security"], settings.secrets):
        raise Rejected(401, "signature does not match any configured secret")
    return await make_durable(from_document(doc), body, publisher, spool)


async def make_durable(event: Event, body: bytes, publisher: Publisher, spool: Spool) -> Accepted:
    """A confirmed publish; failing that, a spool record on stable storage; failing that
    (spool full or broken), 503: the only case where an outage costs Easemob a retry."""
    try:
        await publisher.publish(event.name, event.call_id, body)
        return Accepted(event, "broker")
    except PublishError as exc:
        broker_error = str(exc)
    try:
        await spool.append(Record(event.name, event.call_id, body))
    except SpoolError as exc:
        raise Rejected(503, f"{exc}; broker: {broker_error}") from exc
    return Accepted(event, "spool", broker_error)


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it is known to exceed ``limit``:
    from Content-Length before reading, or while streaming a chunked body."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, f"body of {request.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def receive(request: web.Request) -> web.Response:
    app = request.app
    started = time.perf_counter()
    try:
        accepted = await accept(request, app[SETTINGS], app[PUBLISHER], app[SPOOL])
    except Rejected as exc:
        _log_rejected(exc, request, started)
        return web.json_response({"error": exc.reason[:200]}, status=exc.status)
    event = accepted.event
    extra = {"broker_error": accepted.broker_error} if accepted.broker_error else {}
    with bound_contextvars(call_id=event.call_id, event_name=event.name):
        log.info(
            "callback.accepted",
            status=200,
            durable=accepted.durable,
            duration_ms=_ms(started),
            **extra,
        )
    return web.Response(body=OK_BODY, content_type="application/json")


def _log_rejected(exc: Rejected, request: web.Request, started: float) -> None:
    fields = {
        "status": exc.status,
        "reason": exc.reason,
        "remote": request.remote,
        "duration_ms": _ms(started),
    }
    cause = exc.__cause__
    if isinstance(cause, SpoolFull):
        # Loud: Easemob retries once, then drops the callback; 90 of these in 30 s ban the app.
        log.error("spool.full", spool_bytes=cause.used, spool_max_bytes=cause.limit, **fields)
    elif isinstance(cause, SpoolError):
        log.error("callback.rejected", **fields)
    else:
        log.warning("callback.rejected", **fields)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: not stopping, and able to make a callback durable: connected to the broker, or
    with room in the spool for the largest accepted body. An ingress that spools is ready on
    purpose: taking it out of a load balancer during a broker outage would turn callbacks into
    non-200 answers, which Easemob drops after one retry."""
    app = request.app
    spool = app[SPOOL]
    broker = app[PUBLISHER].ready
    stopping = app[STOPPING].is_set()
    ready = not stopping and (broker or spool.free >= app[SETTINGS].body_limit)
    body = {
        "ready": ready,
        "broker": broker,
        "spool_records": spool.records,
        "spool_bytes": spool.bytes,
        "stopping": stopping,
    }
    return web.json_response(body, status=200 if ready else 503)


def create_app(settings: Settings) -> web.Application:
    """Build the ingress application; the spool, the broker connection and the drainer live
    in its cleanup contexts (opened in that order, closed in the reverse one)."""
    settings.require_secrets()
    # aiohttp's own limit stays above ours so that our 413 (with its log line) answers first.
    app = web.Application(client_max_size=settings.body_limit + 1)
    app[SETTINGS] = settings
    app[STOPPING] = asyncio.Event()
    app[PUBLISHER] = Publisher(
        settings.amqp_url, Topology(settings.topology_prefix), settings.publish_timeout
    )
    app[SPOOL] = Spool(settings.spool_dir, settings.spool_max_bytes)
    app[DRAINER] = Drainer(app[SPOOL], app[PUBLISHER])
    app.cleanup_ctx.extend([_spool, _broker, _drainer])
    app.router.add_post(settings.path, receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


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


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
