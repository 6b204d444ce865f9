"""Prometheus metrics: the ingress counts every answer by status, the worker every handler
outcome; a supervised ingress's scrape sums its children; SIGTERM drains before it stops."""

from __future__ import annotations

import asyncio
import platform
import signal
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.sink.metrics import version
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from callback_sink.worker.depth import QueueDepths
from callback_sink.worker.probes import create_probe_app
from tests.conftest import Recorder, callback, post, signed
from tests.processes import CLI, SinkProcess
from tests.scrape import samples, scrape, value
from tests.waiting import until

N, M, K = 7, 3, 2
REQUESTS = "callback_sink_ingress_requests_total"
#: Series only a worker process may export (an ingress exporting them fires worker alerts).
WORKER_SERIES = ("callback_sink_worker_",)


async def test_counters_equal_what_was_sent_and_the_queues_return_to_zero_once_drained(
    ingress: TestClient[Any, Any], settings: Settings, recorder: Recorder, start_worker: Any
) -> None:
    for _ in range(N):
        assert await post(ingress, signed(callback())) == 200
    for _ in range(M):
        assert await post(ingress, signed(callback(), secret="wrong-secret")) == 401
    for _ in range(K):
        assert await post(ingress, b'{"not": "a callback"') == 400
    response = await ingress.get("/metrics")
    found = samples(await response.text())
    assert value(found, REQUESTS, status="200", signed="yes") == N
    assert value(found, REQUESTS, status="401", signed="no") == M  # a bad signature
    assert value(found, REQUESTS, status="401", signed="yes") == 0  # too old, verified
    assert value(found, REQUESTS, status="400", signed="no") == K
    assert value(found, REQUESTS, status="503", signed="no") == 0
    assert value(found, REQUESTS, status="503", signed="yes") == 0
    assert value(found, "callback_sink_build_info", version=version(),
                 python=platform.python_version()) == 1  # fmt: skip
    assert value(found, "callback_sink_ingress_accepted_total", durable="broker") == N
    assert value(found, "callback_sink_ingress_accepted_total", durable="spool") == 0
    assert value(found, "callback_sink_ingress_request_seconds_count") == N + M + K
    assert value(found, "callback_sink_spool_records") == 0

    worker = await start_worker(
        recorder.handler("everything"), recorder.handler("contacts", ("roster",))
    )
    await recorder.wait_for(N)
    depths = QueueDepths(settings, worker.metrics.depths)
    try:

        async def empty() -> dict[str, int] | None:
            found = await depths.poll()
            return found if found == {"work": 0, "retry": 0, "dead_letter": 0} else None

        counts = await until(empty, 20, what="every queue empty", interval=0.1)
    finally:
        await depths.close()
    assert counts == {"work": 0, "retry": 0, "dead_letter": 0}
    async with TestClient(TestServer(create_probe_app(worker))) as probe:
        found = samples(await (await probe.get("/metrics")).text())
        assert (await probe.get("/readyz")).status == 200
    handled = "callback_sink_worker_handled_total"
    assert value(found, handled, handler="everything", outcome="ok") == N
    assert value(found, handled, handler="contacts", outcome="ok") == 0
    assert value(found, handled, handler="everything", outcome="dead_letter") == 0
    assert value(found, "callback_sink_worker_handler_seconds_count", handler="everything") == N
    assert value(found, "callback_sink_queue_messages", queue="work") == 0
    assert value(found, "callback_sink_worker_ready") == 1


def ingress_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_SECRETS": settings.secrets[0],
        "SINK_PORT": str(port),
        "SINK_SPOOL_DIR": settings.spool_dir,
        **extra,
    }


async def post_fresh(url: str, body: bytes) -> int:
    """POST on a new connection, so that SO_REUSEPORT spreads the requests over children."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        headers = {"Content-Type": "application/json"}
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status


async def test_a_scrape_of_a_supervised_ingress_sums_its_children_and_sigterm_drains_first(
    settings: Settings,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = ingress_env(settings, port, SINK_DRAIN_DELAY="3")
    ingress = SinkProcess("ingress", env)
    process = await start_supervised(ingress, processes=2)
    try:
        sent = 60
        for _ in range(sent):
            assert await post_fresh(base + "/callbacks", signed(callback())) == 200
        for _ in range(5):
            assert await post_fresh(base + "/callbacks", b"{}") == 400
        for _ in range(4):  # whichever child answers the scrape, it sees every child's counts
            found = await scrape(base + "/metrics")
            assert value(found, REQUESTS, status="200", signed="yes") == sent
            assert value(found, REQUESTS, status="400", signed="no") == 5
            assert value(found, "callback_sink_ingress_accepted_total", durable="broker") == sent
            assert value(found, "callback_sink_spool_records") == 0
            assert value(found, "process_resident_memory_bytes") > 0
        process.send_signal(signal.SIGTERM)
        await ingress.wait_for_line("ingress.stopping", count=2)
        async with aiohttp.ClientSession() as http, http.get(base + "/readyz") as response:
            assert response.status == 503
        assert await post_fresh(base + "/callbacks", signed(callback())) == 200
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await ingress.kill()


async def test_a_supervised_ingress_exports_no_worker_series(settings: Settings) -> None:
    port = free_port()
    ingress = SinkProcess("ingress", ingress_env(settings, port))
    await start_supervised(ingress, processes=2)
    try:
        for _ in range(4):  # whichever child answers the scrape
            found = await scrape(f"http://127.0.0.1:{port}/metrics")
            assert value(found, REQUESTS, status="200", signed="yes") == 0  # the ingress's own
            worker_series = {name for name, _ in found if name.startswith(WORKER_SERIES)}
            assert worker_series == set()
            builds = [labels for name, labels in found if name == "callback_sink_build_info"]
            assert len(builds) == 1  # one series, not one per child
        assert await ingress.stop(signal.SIGTERM) == 0
    finally:
        await ingress.kill()


async def start_supervised(ingress: SinkProcess, processes: int) -> asyncio.subprocess.Process:
    """``callback-sink ingress --processes N``, once every child listens."""
    ingress.process = await asyncio.create_subprocess_exec(
        *CLI, "ingress", "--processes", str(processes), env=ingress.env, cwd=ingress.cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    ingress._reader = asyncio.create_task(ingress._read())
    await ingress.wait_for_line("ingress.listening", count=processes)
    return ingress.process
