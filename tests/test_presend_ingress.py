"""``POST /presend`` on a real ingress: signature, budget, default, and the verdict records
that reach a worker through RabbitMQ (or the spool)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.handlers.presend import load_presend
from callback_sink.ingress.app import SPOOL
from callback_sink.ingress.presend import PRESEND
from callback_sink.sink.presend import PresendFunc
from callback_sink.sink.settings import Settings
from callback_sink.testing import make_presend_body
from callback_sink.testing.ports import free_port
from tests.conftest import SECRET, Recorder, post
from tests.ingress_server import serving_both
from tests.presend_fixtures import BANNED, sleepy
from tests.waiting import drain_and_stop, until

Client = TestClient[Any, Any]
Start = Callable[[Sequence[PresendFunc], Settings], Awaitable[Client]]
CHAIN = load_presend(["tests.presend_fixtures"], use_entry_points=False)


@pytest.fixture
async def start_ingress() -> AsyncIterator[Start]:
    async with serving_both() as serve:
        yield serve


async def presend_post(client: Client, body: bytes) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    response = await client.post(
        "/presend", data=body, headers={"Content-Type": "application/json"}
    )
    answer = orjson.loads(await response.read())
    return response.status, answer, time.perf_counter() - started


async def test_answers_follow_the_chain_and_each_becomes_one_presend_verdict_event(
    start_ingress: Start, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    worker = await start_worker(recorder.handler("audit", ("presend:verdict",)))
    client = await start_ingress(CHAIN, settings)
    bodies = [
        make_presend_body("hello", secret=SECRET),
        make_presend_body(f"a {BANNED}", secret=SECRET),
        make_presend_body("!shout hi", secret=SECRET),
    ]
    answers = [await presend_post(client, body) for body in bodies]
    assert [(status, answer) for status, answer, _ in answers] == [
        (200, {"valid": True}),
        (200, {"valid": False, "code": "banned-word"}),
        (200, {"valid": True, "payload": {"msg": "HI", "type": "txt"}}),
    ]
    await recorder.wait_for(3)
    await drain_and_stop(worker)  # nothing more arrives: each pre-send callback once
    seen = {event.call_id: event for event in recorder.of("audit")}
    assert len(recorder.of("audit")) == 3
    for body in bodies:
        original = orjson.loads(body)
        event = seen[original["callId"]]
        assert event.name == "presend:verdict"
        record = dict(event.raw)
        verdict = record.pop("presend_verdict")
        assert record == original  # the original document, untouched
        assert verdict["valid"] is (BANNED not in original["payload"]["msg"])
        assert verdict["source"] == "chain"


async def test_a_bad_signature_is_refused_401_and_nothing_runs_or_is_recorded(
    start_ingress: Start, settings: Settings
) -> None:
    ran: list[str] = []

    async def spy(event: Any) -> None:
        ran.append(event.call_id)

    client = await start_ingress([spy], settings)
    status, answer, _ = await presend_post(client, make_presend_body(secret="not-the-secret"))
    assert status == 401 and "valid" not in answer
    assert ran == [] and client.app[PRESEND].recorder.pending == 0
    assert sum(client.app[PRESEND].recorder.counts.values()) == 0


async def test_a_chain_past_the_budget_is_answered_the_default_within_the_budget(
    start_ingress: Start, settings: Settings
) -> None:
    settings = replace(settings, presend_budget_ms=100, presend_default="reject")
    client = await start_ingress([sleepy], settings)
    results = await asyncio.gather(
        *(presend_post(client, make_presend_body(secret=SECRET)) for _ in range(20))
    )
    assert {(status, orjson.dumps(answer)) for status, answer, _ in results} == {
        (200, b'{"valid":false}')
    }
    slowest = max(elapsed for _, _, elapsed in results)
    # 10x the budget, generous on a shared machine, and still far below the chain's 5 s sleep
    # (bench/presend.py measures the tight figure: +50 ms).
    assert slowest < 10 * settings.presend_budget_ms / 1000, slowest
    assert client.app[PRESEND].answers["default:timeout"] == 20


async def test_a_verdict_record_posted_as_a_callback_is_refused(
    start_ingress: Start, settings: Settings
) -> None:
    client = await start_ingress(CHAIN, settings)
    doc = orjson.loads(make_presend_body(secret=SECRET))
    doc["presend_verdict"] = {"valid": True}
    assert await post(client, orjson.dumps(doc)) == 400


async def test_records_made_while_the_broker_is_down_are_spooled_and_flushed_on_stop(
    start_ingress: Start, settings: Settings, tmp_path: Any
) -> None:
    down = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/", publish_timeout=0.5)
    client = await start_ingress(CHAIN, down)
    for _ in range(5):
        status, answer, elapsed = await presend_post(client, make_presend_body(secret=SECRET))
        assert (status, answer) == (200, {"valid": True}) and elapsed < 1.0
    presend = client.app[PRESEND]
    await until(lambda: presend.recorder.counts["spool"] == 5, 10, what="5 spooled verdicts")
    assert client.app[SPOOL].records == 5


async def test_stopping_awaits_the_records_still_in_flight(
    start_ingress: Start, settings: Settings
) -> None:
    client = await start_ingress(CHAIN, settings)
    presend = client.app[PRESEND]
    for _ in range(20):
        await presend_post(client, make_presend_body(secret=SECRET))
    await client.close()
    assert presend.recorder.pending == 0
    assert presend.recorder.counts["broker"] + presend.recorder.counts["spool"] == 20
    assert presend.recorder.counts["lost"] == 0


async def test_an_outage_with_a_full_spool_bounds_the_waiting_records_samples_and_counts_losses(
    start_ingress: Start, settings: Settings
) -> None:
    bound, requests, rate = 20, 300, 2
    down = replace(settings, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
                   publish_timeout=0.5, spool_max_bytes=1, presend_record_queue=bound,
                   reject_log_rate=rate)  # fmt: skip
    with capture_logs() as lines:
        started = time.monotonic()
        client = await start_ingress(CHAIN, down)
        recorder = client.app[PRESEND].recorder
        most = 0
        for _ in range(requests // 50):
            batch = (presend_post(client, make_presend_body(secret=SECRET)) for _ in range(50))
            results = await asyncio.gather(*batch)
            assert {(status, answer["valid"]) for status, answer, _ in results} == {(200, True)}
            most = max(most, recorder.pending)
        await until(lambda: recorder.counts["failed"] >= bound, 10, what="every record failed")
        elapsed = time.monotonic() - started
        await client.close()
    assert most <= bound and recorder.counts["dropped"] == requests - bound
    noisy = [line for line in lines
             if line["event"] in ("presend.record_failed", "presend.record_dropped")]  # fmt: skip
    # At most `rate` lines a second for each of the two kinds (one failure reason here).
    assert len(noisy) <= 2 * rate * (math.ceil(elapsed) + 1), (len(noisy), elapsed)
    [lost] = [line for line in lines if line["event"] == "presend.records_lost"]
    assert lost["log_level"] == "error"
    assert (lost["records"], lost["dropped"]) == (bound, requests - bound)
