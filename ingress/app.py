"""The aiohttp application: ``POST /callbacks``, ``GET /healthz``, ``GET /readyz``.

A callback goes through :func:`accept`: content type → size → JSON shape → signature →
durable publish. Any refusal is a :class:`Rejected` with its HTTP status, logged once as
``callback.rejected`` with the reason; nothing refused reaches the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web
from structlog.contextvars import bound_contextvars

from ingress.publisher import Publisher
from sink import logs
from sink.errors import DecodeError, PublishError, Rejected
from sink.events import Event, from_document, parse
from sink.settings import Settings
from sink.signature import verify
from sink.topology import Topology

log = logs.get("ingress")

SETTINGS = web.AppKey("settings", Settings)
PUBLISHER = web.AppKey("publisher", Publisher)
#: Set when a shutdown began: /readyz turns false so load balancers stop sending.
STOPPING = web.AppKey("stopping", asyncio.Event)

#: Easemob ignores the body of a 200 but refuses one over 1,000 characters.
OK_BODY = b'{"status":"ok"}'
JSON_TYPES = ("application/json",)
READ_CHUNK = 64 * 1024


async def accept(request: web.Request, settings: Settings, publisher: Publisher) -> Event:
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
    event = from_document(doc)
    try:
        await publisher.publish(event, body)
    except PublishError as exc:
        raise Rejected(503, str(exc)) from None
    return event


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
    settings, publisher = request.app[SETTINGS], request.app[PUBLISHER]
    started = time.perf_counter()
    try:
        event = await accept(request, settings, publisher)
    except Rejected as exc:
        log.warning(
            "callback.rejected",
            status=exc.status,
            reason=exc.reason,
            remote=request.remote,
            duration_ms=_ms(started),
        )
        return web.json_response({"error": exc.reason[:200]}, status=exc.status)
    with bound_contextvars(call_id=event.call_id, event_name=event.name):
        log.info("callback.accepted", status=200, duration_ms=_ms(started))
    return web.Response(body=OK_BODY, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: connected to the broker with the topology declared."""
    broker = request.app[PUBLISHER].ready
    stopping = request.app[STOPPING].is_set()
    ready = broker and not stopping
    return web.json_response(
        {"ready": ready, "broker": broker, "stopping": stopping}, status=200 if ready else 503
    )


def create_app(settings: Settings) -> web.Application:
    """Build the ingress application; the broker connection lives in its cleanup context."""
    settings.require_secrets()
    # aiohttp's own limit stays above ours so that our 413 (with its log line) answers first.
    app = web.Application(client_max_size=settings.body_limit + 1)
    app[SETTINGS] = settings
    app[STOPPING] = asyncio.Event()
    app[PUBLISHER] = Publisher(
        settings.amqp_url, Topology(settings.topology_prefix), settings.publish_timeout
    )
    app.cleanup_ctx.append(_broker)
    app.router.add_post(settings.path, receive)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _broker(app: web.Application) -> AsyncIterator[None]:
    publisher = app[PUBLISHER]
    await publisher.connect()
    log.info("ingress.connected", exchange=app[SETTINGS].topology_prefix)
    yield
    await publisher.close()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
