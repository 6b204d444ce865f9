"""Running the ingress and the worker as long-lived services, stopped by SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from callback_sink.handlers.presend import load_presend
from callback_sink.handlers.registry import load
from callback_sink.ingress import eventloop
from callback_sink.ingress.app import (
    DRAINER_STOP_MARGIN,
    PUBLISHER,
    STOPPING,
    create_app,
    make_runner,
)
from callback_sink.ingress.exporter import multiprocess_dir
from callback_sink.ingress.presend import install as install_presend
from callback_sink.ingress.siblings import Adopter, child_dir, claim_root, stranded
from callback_sink.ingress.supervisor import Supervisor
from callback_sink.shutdown import ingress_stop_seconds
from callback_sink.sink import logs
from callback_sink.sink.errors import StartupError
from callback_sink.sink.metrics import (
    MULTIPROC_ENV,
    REGISTRY,
    IngressMetrics,
    QueueMetrics,
    RestMetrics,
    WorkerMetrics,
)
from callback_sink.sink.metrics_store import StoreMetrics
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import redis_tls_kwargs
from callback_sink.worker.consumer import Worker
from callback_sink.worker.dedup import open_store
from callback_sink.worker.depth import polling
from callback_sink.worker.probes import linger, serving
from callback_sink.worker.replica_wait import ReplicaWait

log = logs.get("sink")

#: Beyond its own graceful shutdown, how long a stopping parent gives a child before killing it.
CHILD_STOP_MARGIN = 10.0
#: How often a child checks that its parent is still there, seconds.
ORPHAN_CHECK = 0.5
#: The exit code of an ingress that stopped with callbacks left in its spool.
STRANDED_EXIT = 3
#: What becomes of a spool left behind (said in the ``spool.stranded`` line).
HANDOVER = (
    "answered 200 but not published: the next ingress started on the same SINK_SPOOL_DIR "
    "drains them; until then nothing does (a StatefulSet scaled down keeps its volume)"
)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Turn the first SIGTERM or SIGINT into ``stop.set()``: a graceful shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_ingress(settings: Settings, stop: asyncio.Event, *, poll_queues: bool = True) -> None:
    """One ingress in this process (``callback-sink run``, tests): it claims the spool root,
    spools into ``<root>/0`` and drains orphaned spools under the root like a child would.
    ``poll_queues``: reports the queues' depths (off when a worker in this process does)."""
    owner = claim_root(settings.spool_dir)
    try:
        await serve_ingress(settings, stop, index=0, reuse_port=False, poll_queues=poll_queues)
    finally:
        os.close(owner)


def check_stranded(root: str) -> int:
    """After every process of an ingress stopped: 0 when its spools under ``root`` are empty,
    else :data:`STRANDED_EXIT`, with a ``spool.stranded`` error line saying what is left."""
    records, size = stranded(root)
    if not records:
        return 0
    log.error("spool.stranded", records=records, bytes=size, dir=root, handover=HANDOVER)
    return STRANDED_EXIT


async def run_ingress_child(settings: Settings, stop: asyncio.Event, index: int) -> None:
    """Child ``index`` of a supervised ingress: shares the port, owns ``<root>/<index>``, and
    stops if its parent disappears (the parent holds the root's claim for it)."""
    watchdog = asyncio.create_task(_stop_when_orphaned(stop))
    try:
        await serve_ingress(settings, stop, index=index, reuse_port=True)
    finally:
        watchdog.cancel()


async def serve_ingress(
    settings: Settings,
    stop: asyncio.Event,
    *,
    index: int,
    reuse_port: bool,
    poll_queues: bool = True,
) -> None:
    """Serve callbacks until ``stop``, spooling into ``<spool root>/<index>``. Process 0 also
    polls the queues' depths and consumers (``poll_queues``), so that work piling up shows
    while every worker is stopped; one poller per ingress, not one per process."""
    root = settings.spool_dir
    metrics = IngressMetrics.on(REGISTRY)
    app = create_app(replace(settings, spool_dir=str(child_dir(root, index))), metrics)
    install_presend(app, load_presend(settings.handlers))
    adopter = Adopter(root, index, app[PUBLISHER], settings.spool_max_bytes)

    async def adopting(app: web.Application) -> AsyncIterator[None]:
        adopter.start()
        yield
        await adopter.stop(grace=settings.publish_timeout + DRAINER_STOP_MARGIN)

    app.cleanup_ctx.append(adopting)
    if index == 0 and poll_queues:

        async def depths(app: web.Application) -> AsyncIterator[None]:
            async with polling(settings, QueueMetrics.on(REGISTRY), role="ingress"):
                yield

        app.cleanup_ctx.append(depths)
    runner = make_runner(
        app, access_log=None, shutdown_timeout=settings.shutdown_timeout, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_port=reuse_port)
    await site.start()
    url = f"http://{settings.host}:{settings.port}{settings.path}"
    log.info("ingress.listening", url=url, process=index, pid=os.getpid())
    await stop.wait()
    # Out of the load balancer first (/readyz 503), still taking what it sends meanwhile.
    app[STOPPING].set()
    log.info("ingress.stopping", process=index, drain_delay_s=settings.drain_delay)
    if settings.drain_delay:
        await asyncio.sleep(settings.drain_delay)
    await runner.cleanup()
    log.info("ingress.stopped", process=index)


def supervise(settings: Settings, processes: int) -> int:
    """Run ``processes`` ingress children under this process until SIGTERM / SIGINT; the exit
    code is non-zero when a child had to be killed at the stop (1) or callbacks were left in
    a spool (3); children that keep dying are restarted, backing off, and make /readyz 503.
    Unusable settings stop it before any child starts: a missing secret, a spool root that is
    read-only or claimed, a port in use."""
    settings.require_secrets()
    _check_port(settings.host, settings.port)
    owner = claim_root(settings.spool_dir)
    try:
        with multiprocess_dir() as metrics:
            env = {
                **os.environ,
                "SINK_INGRESS_PROCESSES": str(processes),
                MULTIPROC_ENV: metrics.path,
            }
            supervisor = Supervisor(
                lambda index: [
                    sys.executable,
                    "-m",
                    "callback_sink",
                    "ingress",
                    "--child",
                    str(index),
                ],
                processes,
                env=env,
                stop_timeout=ingress_stop_seconds(settings) + CHILD_STOP_MARGIN,
                on_exit=metrics.process_dead,
                state_dir=settings.spool_dir,
            )

            async def main() -> int:
                stop = asyncio.Event()
                stop_on_signals(stop)
                return await supervisor.run(stop)

            code = asyncio.run(main())
            left = check_stranded(settings.spool_dir)
            return code or left
    finally:
        os.close(owner)


def _check_port(host: str, port: int) -> None:
    """Fail at once, in the parent, when the port is held by a process that does not share it
    (otherwise every child would die binding it, again and again)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("ingress.orphaned", parent=parent, action="stopping")
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ORPHAN_CHECK)


async def run_worker(settings: Settings, stop: asyncio.Event, *, lingering: bool = True) -> None:
    """A worker with its probe and metrics server (``SINK_WORKER_PORT``) and the queue poll
    behind ``callback_sink_queue_messages`` / ``_consumers``; after the drain the server
    lingers (``SINK_METRICS_LINGER_S``) for one more scrape of the final counts, unless
    ``lingering`` is off (``callback-sink run``: a developer's Ctrl-C stops at once)."""
    registry = load(settings.handlers)
    wait, tls = ReplicaWait.of(settings), redis_tls_kwargs(settings)
    store = open_store(settings.dedup_url, settings.topology_prefix, wait, tls)
    RestMetrics.on(REGISTRY)  # declared at start: the REST client counts into it
    StoreMetrics.on(REGISTRY)  # and the dedup store's WAITs (SINK_DEDUP_WAIT)
    worker = Worker(settings, registry, store, WorkerMetrics.on(REGISTRY))
    async with serving(settings, worker):
        if not await _start_unless_stopped(worker, stop):
            return
        try:
            async with polling(settings, worker.metrics.depths):
                await stop.wait()
        finally:
            stopping = time.monotonic()
            await worker.stop()
        if lingering:
            await linger(settings, worker, time.monotonic() - stopping)


async def _start_unless_stopped(worker: Worker, stop: asyncio.Event) -> bool:
    """Start the worker, which may wait a while for the broker and the dedup store; a SIGTERM
    meanwhile stops it at once (an orchestrator's grace period is shorter than
    ``SINK_STARTUP_TIMEOUT_S``). False when it was stopped before it started."""
    starting = asyncio.create_task(worker.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()  # a StartupError goes up: one line, exit 1
        return True
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, StartupError):
        await starting
    await worker.stop()
    log.info("worker.stopped_before_start")
    return False


async def run_all(settings: Settings, stop: asyncio.Event) -> None:
    """Ingress and worker in one process: for development."""
    await asyncio.gather(
        run_ingress(settings, stop, poll_queues=False),
        run_worker(settings, stop, lingering=False),
    )


def serve(main: Callable[[Settings, asyncio.Event], Awaitable[None]], settings: Settings) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await main(settings, stop)

    eventloop.run(runner(), settings.loop)
