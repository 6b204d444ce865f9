"""Fault injection on real processes: every callback that got 200 is handled exactly once
per handler, none lost, whatever breaks in between.

Each scenario prints a ``FAULT FIGURES`` line (sent, accepted, refused, handled,
duplicates suppressed, lost). These tests stop and start the shared RabbitMQ and Redis, so
they run last and one at a time.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callback_sink.sink.settings import Settings
from tests.broker import publish_raw, queue_depth
from tests.faults.harness import (
    Figures,
    Sender,
    Sink,
    have,
    reckon,
    restart_redis,
    run_cmd,
    stream_bodies,
)
from tests.needs import missing
from tests.processes import ROOT

pytestmark = pytest.mark.faults

#: The workers' SINK_CONCURRENCY default: at most this many handler calls are in flight.
CONCURRENCY = Settings().concurrency


def require(command: str) -> None:
    """A missing tool skips the scenario locally and fails it under CI=true."""
    if not have(command):
        missing(f"{command} is not installed here")


@pytest.fixture
async def sink(tmp_path: Path, amqp_url: str, redis_url: str) -> AsyncIterator[Sink]:
    sink = Sink(tmp_path, amqp_url, redis_url, SINK_HANDLER_TIMEOUT="2")
    yield sink
    await sink.close()


def assert_exactly_once(figures: Figures, *, killed_inflight: int = 0) -> None:
    """None lost, none refused, and no handler run twice for one callback, except: a worker
    SIGKILLed between a handler's side effect and its done mark cannot know the handler
    finished, so each handler call in flight at the kill may run once more (at-least-once
    is the only honest promise for a killed process; see docs/explanation/reliability.md)."""
    assert figures.lost == 0, figures
    assert figures.extra_runs <= killed_inflight, figures
    assert figures.notes["unexpected_records"] == 0, figures
    assert figures.refused == 0, figures
    assert figures.accepted == figures.sent, figures


async def test_rabbitmq_stopped_mid_stream_loses_nothing_and_refuses_nothing(sink: Sink) -> None:
    require("rabbitmqctl")
    await sink.start_ingress()
    await sink.start_worker()
    sender = Sender(sink.url, stream_bodies(3000, "rabbit"), rate=200)
    figures = Figures("rabbitmq stop_app for 10 s mid-stream")
    stream = asyncio.create_task(sender.run())
    try:
        await sender.reached(0.2)
        await run_cmd("rabbitmqctl", "stop_app")
        await asyncio.sleep(10)  # the scenario: the broker stays down 10 s mid-stream
    finally:
        await run_cmd("rabbitmqctl", "start_app")
        await run_cmd("rabbitmqctl", "await_startup")
    await stream
    assert sink.ingress is not None
    figures.notes["spooled"] = sum(
        line.get("durable") == "spool" for line in sink.ingress.events("callback.accepted")
    )
    await reckon(sink, sender, figures, within=180)
    assert figures.non_200_answers == 0, figures
    assert figures.notes["spooled"] > 0, "the outage really happened mid-stream"
    assert_exactly_once(figures)


async def test_a_worker_killed_mid_stream_and_restarted_loses_nothing(sink: Sink) -> None:
    await sink.start_ingress()
    worker = await sink.start_worker()
    sender = Sender(sink.url, stream_bodies(2000, "wkill"), rate=400)
    stream = asyncio.create_task(sender.run())
    await sender.reached(0.4)
    await worker.stop(signal.SIGKILL)
    sink.retire(worker)
    await asyncio.sleep(1)
    await sink.start_worker()
    await stream
    figures = await reckon(sink, sender, Figures("worker SIGKILL mid-stream, restarted"))
    assert_exactly_once(figures, killed_inflight=CONCURRENCY)


async def test_an_ingress_killed_with_a_full_spool_drains_it_when_restarted(sink: Sink) -> None:
    require("rabbitmqctl")
    ingress = await sink.start_ingress()
    await sink.start_worker()
    before = Sender(sink.url, stream_bodies(500, "ikill-a"), rate=500)
    await before.run()
    during = Sender(sink.url, stream_bodies(1000, "ikill-b"), rate=500)
    try:
        await run_cmd("rabbitmqctl", "stop_app")
        await during.run()
        spooled = sum(
            line.get("durable") == "spool" for line in ingress.events("callback.accepted")
        )
        await ingress.stop(signal.SIGKILL)
        sink.retire(ingress)
    finally:
        await run_cmd("rabbitmqctl", "start_app")
        await run_cmd("rabbitmqctl", "await_startup")
    await sink.start_ingress()
    after = Sender(sink.url, stream_bodies(500, "ikill-c"), rate=500)
    await after.run()
    combined = Sender(sink.url, [*before.bodies, *during.bodies, *after.bodies], rate=1)
    combined.accepted = [*before.accepted, *during.accepted, *after.accepted]
    combined.refused = [*before.refused, *during.refused, *after.refused]
    combined.non_200 = before.non_200 + during.non_200 + after.non_200
    figures = Figures("ingress SIGKILL with spooled callbacks, restarted")
    figures.notes["spooled_before_kill"] = spooled
    await reckon(sink, combined, figures, within=180)
    assert spooled == len(during.bodies), "every callback during the outage went to the spool"
    assert_exactly_once(figures)


async def test_redis_restarted_mid_stream_loses_nothing_and_runs_nothing_twice(
    sink: Sink,
) -> None:
    require("redis-server")
    await sink.start_ingress()
    await sink.start_worker()
    sender = Sender(sink.url, stream_bodies(2000, "redis"), rate=300)
    stream = asyncio.create_task(sender.run())
    await sender.reached(0.3)
    await restart_redis()
    await stream
    figures = await reckon(sink, sender, Figures("redis restarted mid-stream"))
    figures.notes["pauses"] = sum(len(w.events("dedup.unavailable")) for w in sink.workers)
    assert_exactly_once(figures)


async def test_flaky_handlers_retry_with_backoff_and_broken_ones_replay_after_a_fix(
    sink: Sink, tmp_path: Path
) -> None:
    fix = tmp_path / "fixed"
    await sink.start_ingress()
    worker = await sink.start_worker(SINK_TEST_FLAKY_FAILURES="2", SINK_TEST_FIX_FILE=str(fix))
    sender = Sender(sink.url, stream_bodies(520, "retry"), rate=500)
    await sender.run()
    sessions = sum(name.startswith("session:") for _, name in sender.accepted)
    dead_queue = f"{sink.prefix}.dead"
    async with asyncio.timeout(60):
        while await queue_depth(sink.env["SINK_AMQP_URL"], dead_queue) < sessions:
            await asyncio.sleep(0.2)
    handled = worker.events("callback.handled")
    dead = [line for line in handled if line.get("outcome") == "dead_letter"]
    assert {line["handler"] for line in dead} == {"tests.recording.broken"}
    assert {line["attempt"] for line in dead} == {4}
    flaky = [
        line for line in worker.events("callback.handled") if line["handler"].endswith("flaky")
    ]
    rosters = sum(name.startswith("roster:") for _, name in sender.accepted)
    assert sum(line["outcome"] == "retry" for line in flaky) == 2 * rosters
    assert sum(line["outcome"] == "ok" for line in flaky) == rosters

    listing = await _cli(sink, "dlq", "list")
    assert f"{sessions} dead letter(s)" in listing
    assert "tests.recording.broken" in listing and "broken until fixed" in listing
    fix.touch()
    replay = await _cli(sink, "dlq", "replay", "--all")
    assert f"{sessions} dead letter(s) replayed" in replay
    again = await _cli(sink, "dlq", "replay", "--all")
    assert "0 dead letter(s) replayed" in again
    figures = await reckon(sink, sender, Figures("handler fails twice / always until fixed"))
    figures.notes["dead_lettered_then_replayed"] = sessions
    assert_exactly_once(figures)


async def test_garbage_on_the_work_queue_is_dead_lettered_and_the_stream_flows(
    sink: Sink,
) -> None:
    await sink.start_ingress()
    await sink.start_worker()
    sender = Sender(sink.url, stream_bodies(2000, "garbage"), rate=400)
    stream = asyncio.create_task(sender.run())
    await sender.reached(0.3)
    for junk in (b"\x00\x01\x02", b"{not json", b"[]", b'{"callId": 1}'):
        await publish_raw(sink.env["SINK_AMQP_URL"], f"{sink.prefix}.work", junk)
    await stream
    figures = await reckon(sink, sender, Figures("garbage published onto the work queue"))
    assert await queue_depth(sink.env["SINK_AMQP_URL"], f"{sink.prefix}.dead") == 4
    assert_exactly_once(figures)


async def test_sigterm_lets_handlers_in_flight_finish_and_nothing_runs_twice(
    sink: Sink,
) -> None:
    await sink.start_ingress()
    worker = await sink.start_worker(SINK_TEST_SLOW_SECONDS="0.2")
    sender = Sender(sink.url, stream_bodies(1500, "term"), rate=400)
    stream = asyncio.create_task(sender.run())
    await sender.reached(0.5)
    code = await worker.stop(signal.SIGTERM)
    sink.retire(worker)
    assert code == 0
    assert worker.events("worker.stopped")
    await sink.start_worker(SINK_TEST_SLOW_SECONDS="0.2")
    await stream
    figures = await reckon(sink, sender, Figures("worker SIGTERM with handlers in flight"))
    figures.notes["drained_inflight"] = [
        line.get("inflight") for line in worker.events("worker.draining")
    ]
    assert figures.duplicates_suppressed == 0, "nothing was redelivered to a handler twice"
    assert_exactly_once(figures)


async def _cli(sink: Sink, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callback_sink", *args, cwd=ROOT,
        env={**sink.env, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out
    return out.decode()
