"""The worker's small HTTP server: ``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.

It listens on ``SINK_WORKER_HOST``:``SINK_WORKER_PORT`` (port 0: no server) from before the
worker reaches the broker until after it stopped, so an orchestrator sees a live process
that is not ready yet while it waits for its dependencies. Several workers on one host each
need a port of their own.

- ``/healthz``: 200 while the process answers.
- ``/readyz``: 200 while the worker consumes (started, not stopping, not paused for the dedup
  store, its channel not closed by the broker: :mod:`worker.channel`), its broker connection
  is up (not lost, nor reconnecting: :mod:`worker.link`) and the dedup store answers a ping
  (and takes writes: :mod:`worker.store_health`); 503 otherwise, with a JSON body saying which.
- ``/metrics``: the worker's Prometheus metrics; ``callback_sink_worker_ready`` is the same
  readiness, refreshed by each scrape.

After a stop the server stays up for ``SINK_METRICS_LINGER_S`` (:func:`linger`), so that the
next scrape still sees the counts of the handlers that finished during the drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable, StartupError
from callback_sink.sink.metrics import render
from callback_sink.sink.settings import Settings
from callback_sink.worker.consumer import Worker

log = logs.get("worker")

WORKER = web.AppKey("worker", Worker)
#: How long a readiness probe waits for the dedup store's answer, seconds.
PING_TIMEOUT = 2.0


async def readiness(worker: Worker) -> dict[str, bool]:
    """Whether ``worker`` consumes, its broker connection is up and its dedup store answers
    (not asked once the worker stops: it is closed); sets the ready gauge."""
    consuming, broker = worker.consuming, worker.link.up
    store = False
    if not worker.stopping:
        try:
            await asyncio.wait_for(worker.store.ping(), PING_TIMEOUT)
            store = True
        except (DedupUnavailable, TimeoutError, OSError):
            pass
    ready = consuming and broker and store
    worker.metrics.ready.set(1 if ready else 0)
    return {"ready": ready, "consuming": consuming, "broker": broker, "dedup_store": store}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    body = await readiness(request.app[WORKER])
    return web.json_response(body, status=200 if body["ready"] else 503)


async def metrics(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    await readiness(worker)
    body, content_type = render(worker.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_probe_app(worker: Worker) -> web.Application:
    app = web.Application()
    app[WORKER] = worker
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@asynccontextmanager
async def serving(settings: Settings, worker: Worker) -> AsyncIterator[str | None]:
    """Serve the probes of ``worker`` while the context lasts; yields their base URL, or None
    when ``SINK_WORKER_PORT`` is 0. A port in use stops start-up with one line."""
    if not settings.worker_port:
        yield None
        return
    host, port = settings.worker_host, settings.worker_port
    runner = web.AppRunner(create_probe_app(worker), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(
            f"cannot listen on {host}:{port} (SINK_WORKER_PORT): {exc.strerror}"
        ) from None
    url = f"http://{host}:{port}"
    log.info("worker.http_listening", url=url)
    try:
        yield url
    finally:
        await runner.cleanup()


async def linger(settings: Settings, worker: Worker, spent: float) -> None:
    """After a stop that took ``spent`` seconds, keep serving ``/metrics`` for
    ``SINK_METRICS_LINGER_S`` (at most what is left of ``SINK_SHUTDOWN_TIMEOUT``), so that one
    more scrape sees the last counts; no wait without a server (``SINK_WORKER_PORT`` 0)."""
    wait = min(settings.metrics_linger_s, max(0.0, settings.shutdown_timeout - spent))
    if not settings.worker_port or wait <= 0:
        return
    worker.metrics.ready.set(0)
    log.info("worker.metrics_linger", seconds=round(wait, 3))
    await asyncio.sleep(wait)
