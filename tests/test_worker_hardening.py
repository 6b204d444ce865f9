"""The worker refuses forged replays, honours per-handler options, and stops at start-up
when a handler's start-up hook fails (on the real broker)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.handlers.registry import Registry
from callback_sink.sink import headers
from callback_sink.sink.errors import StartupError
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.worker.consumer import Worker
from callback_sink.worker.dedup import MemoryStore
from tests.broker import queue_depth, take_all
from tests.conftest import Recorder, callback, post, signed
from tests.waiting import until

Client = TestClient[Any, Any]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The worker's own defences are under test: the ingress's edge dedup (which answers a
    re-post of a recent callId without storing it again) is off, so every copy reaches it."""
    return replace(settings, edge_dedup_size=0)


async def fail(event: Event) -> None:
    raise ValueError("downstream is down")


async def test_a_callback_replayed_as_another_operation_is_refused_as_forged(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.kicks", ("muc",)))
    with capture_logs() as logs:
        assert await post(ingress, signed(callback("XXXX#XXXX_captured", "apply"))) == 200
        await recorder.wait_for(1)
        # The signature covers only callId and timestamp: the same ones with another payload.
        assert await post(ingress, signed(callback("XXXX#XXXX_captured", "kick"))) == 200
        await until(
            lambda: any(line["event"] == "callback.forged" for line in logs), 10,
            what="a callback.forged line",
        )  # fmt: skip
    assert [e.name for e in recorder.of("tests.kicks")] == ["muc:apply"]
    [forged] = [line for line in logs if line["event"] == "callback.forged"]
    assert forged["event_name"] == "muc:kick"
    assert forged["first_seen_as"] == "muc:apply"


async def test_the_same_callback_twice_is_a_duplicate_not_a_forgery(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.once"))
    body = signed(callback("XXXX#XXXX_twice"))
    with capture_logs() as logs:
        assert await post(ingress, body) == 200
        assert await post(ingress, body) == 200
        await until(
            lambda: sum(line["event"] == "callback.handled" for line in logs) >= 2, 10,
            what="two callback.handled lines",
        )  # fmt: skip
    outcomes = sorted(line["outcome"] for line in logs if line["event"] == "callback.handled")
    assert outcomes == ["duplicate", "ok"]
    assert not any(line["event"] == "callback.forged" for line in logs)


async def test_retries_on_a_handler_change_its_attempts_before_dead_lettering(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    assert settings.max_attempts == 3
    await start_worker(recorder.handler("tests.impatient", behaviour=fail, retries=2))
    assert await post(ingress, signed(callback("XXXX#XXXX_impatient"))) == 200
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.headers[headers.ATTEMPT] == 2
    assert dead.headers[headers.DEAD_REASON] == "attempts-exhausted"


async def test_an_exception_type_the_handler_gives_up_on_is_dead_lettered_at_once(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.picky", behaviour=fail, give_up_on=(ValueError,)))
    assert await post(ingress, signed(callback())) == 200
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.headers[headers.ATTEMPT] == 1
    assert dead.headers[headers.DEAD_REASON] == "permanent"


async def test_a_handler_runs_at_most_its_concurrency_at_once(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    running = peak = 0

    async def slow(event: Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)  # the scenario: a slow handler, so runs overlap
        running -= 1

    await start_worker(recorder.handler("tests.narrow", behaviour=slow, concurrency=2))
    for _ in range(8):
        assert await post(ingress, signed(callback())) == 200
    await recorder.wait_for(8)
    assert peak == 2


async def test_a_handler_timeout_option_cancels_it_sooner_than_the_worker_wide_one(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def hang(event: Event) -> None:
        await asyncio.sleep(60)  # the scenario: a handler that hangs past its timeout

    assert settings.handler_timeout == 10.0
    await start_worker(recorder.handler("tests.hangs", behaviour=hang, timeout=0.1, retries=1))
    assert await post(ingress, signed(callback())) == 200
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1, within=5)
    assert dead.headers[headers.ERROR_TYPE] == "TimeoutError"


async def test_a_failing_start_up_hook_stops_the_worker_before_it_consumes(
    ingress: Client, settings: Settings, recorder: Recorder
) -> None:
    async def broken_pool() -> None:
        raise ConnectionError("pool: connection refused")

    assert await post(ingress, signed(callback())) == 200
    registry = Registry([recorder.handler("tests.any")], startup_hooks=[broken_pool])
    worker = Worker(settings, registry, MemoryStore())
    with pytest.raises(StartupError, match=r"broken_pool failed: pool: connection refused"):
        await worker.start()
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 1
    assert recorder.calls == []


async def test_start_up_hooks_run_in_registration_order_before_the_first_callback(
    ingress: Client, settings: Settings, recorder: Recorder
) -> None:
    order: list[str] = []

    async def first() -> None:
        order.append("first")

    async def second() -> None:
        order.append("second")

    async def handle(event: Event) -> None:
        order.append("handled")

    assert await post(ingress, signed(callback())) == 200
    handler = recorder.handler("tests.any", behaviour=handle)
    worker = Worker(settings, Registry([handler], startup_hooks=[first, second]), MemoryStore())
    await worker.start()
    try:
        await recorder.wait_for(1)
    finally:
        await worker.stop()
    assert order == ["first", "second", "handled"]


async def test_a_worker_gives_up_on_an_unreachable_broker_after_the_start_up_timeout(
    settings: Settings,
) -> None:
    from dataclasses import replace

    dead_end = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/", startup_timeout_s=1.0)
    worker = Worker(dead_end, Registry([]), MemoryStore())
    with pytest.raises(StartupError, match=r"RabbitMQ \(SINK_AMQP_URL\) did not answer"):
        await worker.start()
