"""The worker retries with backoff, dead-letters with reasons, and logs one line per handler."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.sink import headers
from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from tests.broker import publish_raw, queue_depth, take_all
from tests.conftest import Recorder, callback, post, signed
from tests.waiting import drain_and_stop

Client = TestClient[Any, Any]


async def always_fail(event: Event) -> None:
    raise ValueError("the CRM said no")


async def test_a_handler_that_always_fails_is_dead_lettered_after_the_last_attempt(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(
        recorder.handler("tests.ok"), recorder.handler("tests.broken", behaviour=always_fail)
    )
    with capture_logs() as logs:
        assert await post(ingress, signed(callback("XXXX#XXXX_doomed"))) == 200
        [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    h = dead.headers
    assert dead.message_id == "XXXX#XXXX_doomed"
    assert h[headers.FAILED_HANDLERS] == "tests.broken"
    assert h[headers.ERROR_TYPE] == "ValueError"
    assert h[headers.ERROR] == "the CRM said no"
    assert h[headers.ATTEMPT] == settings.max_attempts == 3
    assert h[headers.DEAD_REASON] == "attempts-exhausted"
    assert h[headers.FIRST_FAILURE] <= h[headers.LAST_FAILURE]
    handled = [
        (line["handler"], line["outcome"]) for line in logs if line["event"] == "callback.handled"
    ]
    assert handled.count(("tests.ok", "ok")) == 1
    assert handled.count(("tests.ok", "duplicate")) == 0  # retries skip settled handlers
    assert handled.count(("tests.broken", "retry")) == 2
    assert handled.count(("tests.broken", "dead_letter")) == 1
    assert len(recorder.of("tests.ok")) == 1


async def test_a_permanent_error_is_dead_lettered_at_once(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def refuse(event: Event) -> None:
        raise PermanentError("malformed group id")

    await start_worker(recorder.handler("tests.refuse", behaviour=refuse))
    assert await post(ingress, signed(callback("XXXX#XXXX_perm"))) == 200
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.headers[headers.ATTEMPT] == 1
    assert dead.headers[headers.DEAD_REASON] == "permanent"


async def test_a_handler_can_choose_its_retry_delay(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    calls: list[float] = []

    async def later(event: Event) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise Retry("rate limited", delay=0.05)

    await start_worker(recorder.handler("tests.later", behaviour=later))
    assert await post(ingress, signed(callback())) == 200
    await recorder.wait_for(1)
    assert len(calls) == 2
    # 0.05 s is rounded up to the 0.1 s step: its own delay queue (declared only when used;
    # a passive declare of a missing one fails), not the 0.2 s first tier. No timing asserted:
    # the machine may be busy.
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.delay.100") == 0
    assert calls[1] >= calls[0] + 0.1 * 0.9


def test_a_retry_delay_must_be_a_finite_number() -> None:
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="finite"):
            Retry(delay=bad)


async def test_garbage_on_the_queue_is_dead_lettered_and_the_stream_behind_flows(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.all"))
    await publish_raw(settings.amqp_url, f"{settings.topology_prefix}.work", b"\x00\xffnot json")
    for _ in range(5):
        assert await post(ingress, signed(callback())) == 200
    await recorder.wait_for(5)
    [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1)
    assert dead.body == b"\x00\xffnot json"
    assert dead.headers[headers.DEAD_REASON] == "undecodable"


async def test_each_callback_and_handler_gets_exactly_one_handled_line(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    worker = await start_worker(recorder.handler("tests.one"), recorder.handler("tests.two"))
    with capture_logs() as logs:
        assert await post(ingress, signed(callback("XXXX#XXXX_logged"))) == 200
        await recorder.wait_for(2)
        await drain_and_stop(worker)  # a second line, if any, is written by now
    handled = [line for line in logs if line["event"] == "callback.handled"]
    assert sorted(line["handler"] for line in handled) == ["tests.one", "tests.two"]
    for line in handled:
        assert line["call_id"] == "XXXX#XXXX_logged"
        assert line["event_name"] == "muc:apply"
        assert line["outcome"] == "ok"
        assert line["duration_ms"] >= 0
