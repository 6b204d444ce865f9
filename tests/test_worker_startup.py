"""A worker that cannot start says why in one line and exits non-zero, consuming nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink.settings import Settings
from tests.broker import queue_depth
from tests.conftest import callback, post, signed
from tests.processes import SinkProcess

Client = TestClient[Any, Any]


async def exit_of(worker: SinkProcess, within: float) -> int:
    assert worker.process is not None
    async with asyncio.timeout(within):
        code = await worker.process.wait()
    if worker._reader is not None:
        await asyncio.wait([worker._reader], timeout=5)
    return code


async def start(env: dict[str, str]) -> SinkProcess:
    worker = SinkProcess("worker", env)
    worker.process = await asyncio.create_subprocess_exec(
        *__import__("tests.processes", fromlist=["CLI"]).CLI, "worker",
        env=worker.env, cwd=worker.cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    worker._reader = asyncio.create_task(worker._read())
    return worker


def plain_lines(worker: SinkProcess) -> list[str]:
    return [str(line["text"]) for line in worker.lines if line.get("event") == "stdout"]


async def test_an_unreachable_directory_database_stops_the_worker_with_one_line(
    ingress: Client, settings: Settings
) -> None:
    assert await post(ingress, signed(callback())) == 200
    started = time.monotonic()
    worker = await start({
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_HANDLERS": "callback_sink.handlers.directory",
        "SINK_DIRECTORY_URL": "postgresql://sink@127.0.0.1:1/directory",
    })  # fmt: skip
    assert await exit_of(worker, within=15) != 0
    assert time.monotonic() - started < 15
    [line] = plain_lines(worker)
    assert line.startswith("callback-sink: cannot start:")
    assert "SINK_DIRECTORY_URL" in line
    assert not any("Traceback" in text for text in plain_lines(worker))
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 1


async def test_an_unreachable_broker_is_retried_then_reported_in_one_line(
    settings: Settings,
) -> None:
    worker = await start({
        "SINK_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_STARTUP_TIMEOUT_S": "2",
    })  # fmt: skip
    assert await exit_of(worker, within=30) == 1
    assert worker.events("worker.waiting"), "each failed attempt is logged"
    [line] = [text for text in plain_lines(worker) if text.startswith("callback-sink:")]
    assert "RabbitMQ (SINK_AMQP_URL) did not answer within SINK_STARTUP_TIMEOUT_S=2s" in line
    assert not any("Traceback" in text for text in plain_lines(worker))


async def test_a_worker_still_waiting_for_its_broker_stops_on_sigterm(settings: Settings) -> None:
    import signal

    worker = await start({
        "SINK_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_STARTUP_TIMEOUT_S": "120",
    })  # fmt: skip
    await worker.wait_for_line("worker.waiting")
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert await exit_of(worker, within=15) == 0  # not the 120 s start-up timeout
    assert worker.events("worker.stopped_before_start")


#: A refused login, vhost or database is reported after one attempt, never retried: the bound
#: is the one connection attempt (answered in milliseconds by a live local server, capped at
#: 5 s per node by design) plus the interpreter's start-up, far below the 60 s start-up
#: timeout that a retried error would take.
REFUSED_WITHIN = 10.0


@pytest.mark.parametrize(
    ("variable", "url", "reason"),
    [
        ("SINK_AMQP_URL", "amqp://guest:wrong-password@127.0.0.1:5672/", "ACCESS_REFUSED"),
        ("SINK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "virtual host"),
        ("SINK_DEDUP_URL", "redis://no-such-user:wrong@127.0.0.1:6379/0", "WRONGPASS"),
        ("SINK_DEDUP_URL", "redis://127.0.0.1:6379/999", "database number"),
    ],
    ids=["amqp-password", "amqp-vhost", "redis-password", "redis-db"],
)
async def test_a_refused_login_vhost_or_database_fails_at_once_naming_the_variable(
    settings: Settings, redis_url: str, variable: str, url: str, reason: str
) -> None:
    env = {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_DEDUP_URL": redis_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_STARTUP_TIMEOUT_S": "60",
        "SINK_WORKER_PORT": "0",
        variable: url,
    }
    started = time.monotonic()
    worker = await start(env)
    assert await exit_of(worker, within=REFUSED_WITHIN) == 1
    assert time.monotonic() - started < REFUSED_WITHIN
    assert not worker.events("worker.waiting"), "a permanent error is not retried"
    [line] = [text for text in plain_lines(worker) if text.startswith("callback-sink:")]
    assert line.startswith("callback-sink: cannot start:")
    assert variable in line and reason in line and "(not retried)" in line
    assert "wrong-password" not in line
    assert not any("Traceback" in text for text in plain_lines(worker))
