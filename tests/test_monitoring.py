"""Monitoring that tells the truth: the queues seen from the broker by the ingress too, a worker
not ready while its broker connection is down, a spool left behind is an error, the last
counts of a drain still scrapeable, the build in every process, refusals of signed callbacks.

Real processes on the real broker; an outage is a TCP relay that stops listening (the shared
broker is never stopped), a lost connection one the broker closes (``rabbitmqctl``).
"""

from __future__ import annotations

import asyncio
import platform
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from callback_sink.sink.metrics import version
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.broker import queue_depth
from tests.conftest import callback, post, signed
from tests.needs import missing
from tests.processes import SinkProcess
from tests.scrape import samples, scrape, value
from tests.test_ingress_outage import Relay
from tests.test_metrics import ingress_env, post_fresh, start_supervised
from tests.waiting import until

Client = TestClient[Any, Any]
REQUESTS = "callback_sink_ingress_requests_total"
WORK = {"queue": "work"}


async def status_of(url: str) -> int | None:
    """The status of GET ``url``, None when nothing answers."""
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def readyz(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_with_no_worker_running_the_ingress_reports_the_work_waiting_once_not_per_child(
    settings: Settings,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ingress = SinkProcess("ingress", ingress_env(settings, port, SINK_QUEUE_POLL_S="0.2"))
    await start_supervised(ingress, processes=2)
    try:
        sent = 25
        for _ in range(sent):
            assert await post_fresh(base + "/callbacks", signed(callback())) == 200

        async def depth_seen() -> bool:
            found = await scrape(base + "/metrics")
            return value(found, "callback_sink_queue_messages", **WORK) == sent

        await until(depth_seen, 20, what="the ingress to report the work queue's depth")
        for _ in range(6):  # whichever child answers: the broker's figure, never a sum
            found = await scrape(base + "/metrics")
            assert value(found, "callback_sink_queue_messages", **WORK) == sent
            assert value(found, "callback_sink_queue_consumers", **WORK) == 0
            assert value(found, "callback_sink_queue_messages", queue="dead_letter") == 0
            assert value(found, "callback_sink_build_info", version=version(),
                         python=platform.python_version()) == 1  # fmt: skip
        assert await ingress.stop(signal.SIGTERM) == 0
    finally:
        await ingress.kill()


async def test_readyz_counts_every_childs_spool_and_a_stop_with_records_left_is_an_error(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    relay = Relay(settings.amqp_url)  # not listening: every callback goes to a spool
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = ingress_env(settings, port, SINK_AMQP_URL=relay.url, SINK_SPOOL_DIR=str(root),
                      SINK_PUBLISH_TIMEOUT="2")  # fmt: skip
    ingress = SinkProcess("ingress", env)
    await start_supervised(ingress, processes=2)
    try:
        sent = 30
        for _ in range(sent):
            assert await post_fresh(base + "/callbacks", signed(callback())) == 200
        held = [len(list((root / str(k)).glob("*.seg"))) > 0 for k in (0, 1)]
        assert all(held), "both children spooled some"

        async def whole() -> bool:  # each child's count as the other last wrote it (1 s)
            return all([(await readyz(base))["spool_records"] == sent for _ in range(8)])

        await until(whole, 10, what="/readyz to count both children's spools")
        for _ in range(6):  # whichever child answers
            body = await readyz(base)
            assert body["spool_records"] == sent
            assert 0 < body["process_spool_records"] < sent
        assert await ingress.stop(signal.SIGTERM) == 3
    finally:
        await ingress.kill()
    [line] = ingress.events("spool.stranded")
    assert (line["level"], line["records"], line["dir"]) == ("error", sent, str(root))
    assert int(str(line["bytes"])) > 0
    assert "next ingress started on the same SINK_SPOOL_DIR" in str(line["handover"])

    # The hand-over: the next ingress on the same directory drains it and stops cleanly.
    after = SinkProcess("ingress", {**env, "SINK_AMQP_URL": settings.amqp_url})
    await start_supervised(after, processes=1)
    try:
        queue = f"{settings.topology_prefix}.work"

        async def drained() -> bool:
            return await queue_depth(settings.amqp_url, queue) == sent

        await until(drained, 30, what="the next ingress to publish the spool left behind")
        assert await after.stop(signal.SIGTERM) == 0
    finally:
        await after.kill()
    assert after.events("spool.stranded") == []


class Cuttable(Relay):
    """A relay that can stop accepting new connections while keeping the open ones."""

    async def refuse_new(self) -> None:
        assert self._server is not None
        self._server.close()
        self._server = None


async def broker_connection_of(pid: int) -> str:
    """The broker's id of the connection named by worker process ``pid``."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "client_properties",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await process.communicate()
    wanted = f"pid {pid}"
    for row in out.decode().splitlines():
        connection, _, properties = row.partition("\t")
        if "callback-sink worker" in properties and f'{wanted}"' in properties:
            return connection
    raise AssertionError(f"no broker connection named for worker pid {pid}")


async def test_a_worker_is_not_ready_while_its_broker_connection_is_down_and_ready_once_back(
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl is not installed (it comes with rabbitmq-server)")
    relay = Cuttable(settings.amqp_url)
    await relay.start()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = SinkProcess("worker", {
        "SINK_AMQP_URL": relay.url, "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url, "SINK_WORKER_PORT": str(port),
        "SINK_HANDLERS": "tests.recording", "SINK_TEST_RECORD_DIR": str(tmp_path),
        "SINK_METRICS_LINGER_S": "0",
    })  # fmt: skip
    await worker.start("worker.started")
    try:
        assert await status_of(base + "/readyz") == 200
        assert worker.process is not None
        connection = await broker_connection_of(worker.process.pid)
        await relay.refuse_new()  # its reconnection attempts fail until the relay is back
        closing = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "close_connection", connection, "test: broker side close",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await closing.wait() == 0

        async def unready() -> bool:
            return await status_of(base + "/readyz") == 503

        await until(unready, 20, what="/readyz 503 with the broker connection down")
        body = await readyz(base)
        assert (body["ready"], body["broker"], body["dedup_store"]) == (False, False, True)
        found = await scrape(base + "/metrics")
        assert value(found, "callback_sink_worker_ready") == 0
        assert value(found, "callback_sink_build_info", version=version(),
                     python=platform.python_version()) == 1  # fmt: skip

        await relay.start()

        async def ready() -> bool:
            return await status_of(base + "/readyz") == 200

        await until(ready, 30, what="/readyz 200 once the connection and consumers are back")
        found = await scrape(base + "/metrics")
        assert value(found, "callback_sink_worker_ready") == 1
        assert await worker.stop(signal.SIGTERM) == 0
    finally:
        await worker.kill()
        await relay.cut()


async def test_the_counts_of_handlers_finished_during_the_drain_are_still_scrapeable_after_it(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = SinkProcess("worker", {
        "SINK_AMQP_URL": settings.amqp_url, "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url, "SINK_WORKER_PORT": str(port),
        "SINK_HANDLERS": "tests.recording", "SINK_TEST_RECORD_DIR": str(tmp_path),
        "SINK_TEST_SLOW_SECONDS": "2", "SINK_METRICS_LINGER_S": "4",
    })  # fmt: skip
    await worker.start("worker.started")
    try:
        found = await scrape(base + "/metrics")
        handled = {"handler": "tests.recording.first", "outcome": "ok"}
        assert value(found, "callback_sink_worker_handled_total", **handled) == 0
        assert await post(ingress, signed(callback())) == 200
        queue = f"{settings.topology_prefix}.work"

        async def taken() -> bool:
            return await queue_depth(settings.amqp_url, queue) == 0

        await until(taken, 10, what="the worker to take the callback")
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
        await worker.wait_for_line("worker.metrics_linger")  # the drain is over
        [drained] = worker.events("worker.draining")
        assert drained["inflight"] == 1
        lingering = time.monotonic()
        found = await scrape(base + "/metrics")
        assert value(found, "callback_sink_worker_handled_total", **handled) == 1
        assert value(found, "callback_sink_worker_ready") == 0
        assert await status_of(base + "/readyz") == 503
        assert await worker.stop(signal.SIGTERM, within=15) == 0
        assert time.monotonic() - lingering < 6  # bounded by SINK_METRICS_LINGER_S
    finally:
        await worker.kill()
    assert await status_of(base + "/metrics") is None


async def test_refusals_after_the_signature_verified_are_counted_as_signed(
    ingress: Client,
) -> None:
    old = callback(timestamp=int((time.time() - 3 * 86400) * 1000))
    assert await post(ingress, signed(old)) == 401  # too old: signed, Easemob counts it
    assert await post(ingress, signed(callback(), secret="wrong-secret")) == 401
    assert await post(ingress, b"[]") == 400
    assert await post(ingress, signed(callback())) == 200
    found = samples(await (await ingress.get("/metrics")).text())
    assert value(found, REQUESTS, status="401", signed="yes") == 1
    assert value(found, REQUESTS, status="401", signed="no") == 1
    assert value(found, REQUESTS, status="400", signed="no") == 1
    assert value(found, REQUESTS, status="200", signed="yes") == 1
    assert value(found, REQUESTS, status="503", signed="yes") == 0
