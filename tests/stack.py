"""A monitored sink for tests: a supervised ingress of 2 processes and one worker, as real
subprocesses on free ports, both polling the broker's queues every second."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp

from callback_sink.testing.ports import free_port
from tests.processes import SinkProcess
from tests.scrape import scrape
from tests.waiting import until

#: Processes of the ingress: more than one, so that its scrape is the multiprocess one.
INGRESS_PROCESSES = 2
#: Seconds between two polls of the queues (15 in production): tests wait on the figures.
QUEUE_POLL_S = "1"


@dataclass
class Stack:
    """The running processes and their ports."""

    ingress: SinkProcess
    worker: SinkProcess
    ingress_port: int
    worker_port: int

    @property
    def ingress_url(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def worker_url(self) -> str:
        return f"http://127.0.0.1:{self.worker_port}"

    async def consumed_and_polled(self) -> bool:
        """The worker consumes the work queue and every poller (the worker, the ingress if
        it exports the queue gauges) has seen it do so."""
        key = ("callback_sink_queue_consumers", frozenset({("queue", "work")}))
        worker = await scrape(f"{self.worker_url}/metrics")
        ingress = await scrape(f"{self.ingress_url}/metrics")
        return worker.get(key, 0) >= 1 and ingress.get(key, 1) >= 1


async def _ready(url: str) -> bool:
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            async with http.get(f"{url}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False


@contextlib.asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[Stack]:
    """Start the ingress and the worker with ``env`` (broker, prefix, secrets, spool
    directory, dedup store), wait until both are ready and the queue gauges reflect the
    worker's consumer, and stop both afterwards (those still running)."""
    ingress_port, worker_port = free_port(), free_port()
    common = {**env, "SINK_QUEUE_POLL_S": QUEUE_POLL_S}
    ingress = SinkProcess("ingress", {
        **common, "SINK_PORT": str(ingress_port),
        "SINK_INGRESS_PROCESSES": str(INGRESS_PROCESSES),
    })  # fmt: skip
    worker = SinkProcess("worker", {**common, "SINK_WORKER_PORT": str(worker_port)})
    stack = Stack(ingress, worker, ingress_port, worker_port)
    try:
        await ingress.start("ingress.listening")
        await worker.start("worker.started")
        await until(lambda: _ready(stack.ingress_url), what="the ingress's /readyz")
        await until(lambda: _ready(stack.worker_url), what="the worker's /readyz")
        await until(stack.consumed_and_polled, what="both pollers to see the worker consume")
        yield stack
    finally:
        for process in (worker, ingress):
            if process.process is not None and process.process.returncode is None:
                await process.stop()
