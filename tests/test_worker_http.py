"""The worker's HTTP server: alive, ready once consuming, metrics from the start; off on 0."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from callback_sink.service import run_worker
from callback_sink.sink.errors import StartupError
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.scrape import scrape, value
from tests.waiting import until


async def get(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status


async def test_the_worker_serves_health_readiness_and_metrics_on_its_own_port(
    settings: Settings,
) -> None:
    port = free_port()
    settings = replace(settings, worker_port=port, queue_poll_s=0.2)
    base = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    service = asyncio.create_task(run_worker(settings, stop))
    try:

        async def ready() -> bool:
            try:
                return await get(base + "/readyz") == 200
            except aiohttp.ClientConnectionError:
                return False

        await until(ready, 20, what="the worker's /readyz")
        assert await get(base + "/healthz") == 200
        found = await scrape(base + "/metrics")
        assert value(found, "callback_sink_worker_ready") == 1
        for queue in ("work", "retry", "dead_letter"):
            assert value(found, "callback_sink_queue_messages", queue=queue) == 0

        async def consumed() -> bool:  # the broker's count, polled: this worker on the work queue
            found = await scrape(base + "/metrics")
            return value(found, "callback_sink_queue_consumers", queue="work") == 1

        await until(consumed, 10, what="callback_sink_queue_consumers{queue=work} 1")
        assert value(found, "callback_sink_worker_handled_total", handler="handlers.log.log_event",
                     outcome="ok") >= 0  # fmt: skip
        assert value(found, "callback_sink_rest_requests_total", status="429") >= 0
        assert value(found, "process_resident_memory_bytes") > 0
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(base + "/healthz")


async def test_a_worker_port_in_use_stops_start_up_with_one_line(settings: Settings) -> None:
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StartupError, match=f"127.0.0.1:{port} \\(SINK_WORKER_PORT\\)"):
            await run_worker(replace(settings, worker_port=port), asyncio.Event())
    finally:
        server.close()
        await server.wait_closed()
