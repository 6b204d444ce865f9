"""Running the ingress and the worker as long-lived services, stopped by SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers.registry import load
from ingress.app import STOPPING, create_app
from sink import logs
from sink.settings import Settings
from worker.consumer import Worker
from worker.dedup import open_store

log = logs.get("sink")


def stop_on_signals(stop: asyncio.Event) -> None:
    """Turn the first SIGTERM or SIGINT into ``stop.set()``: a graceful shutdown."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_ingress(settings: Settings, stop: asyncio.Event) -> None:
    app = create_app(settings)
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=settings.shutdown_timeout, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    log.info("ingress.listening", url=f"http://{settings.host}:{settings.port}{settings.path}")
    await stop.wait()
    app[STOPPING].set()
    log.info("ingress.stopping")
    await runner.cleanup()
    log.info("ingress.stopped")


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    registry = load(settings.handlers)
    store = open_store(settings.dedup_url, settings.topology_prefix)
    async with Worker(settings, registry, store):
        await stop.wait()


async def run_all(settings: Settings, stop: asyncio.Event) -> None:
    """Ingress and worker in one process: for development."""
    await asyncio.gather(run_ingress(settings, stop), run_worker(settings, stop))


def serve(main: Callable[[Settings, asyncio.Event], Awaitable[None]], settings: Settings) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await main(settings, stop)

    asyncio.run(runner())
