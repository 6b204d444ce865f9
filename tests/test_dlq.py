"""Dead letters can be listed, shown, replayed once (only the failed handler) and purged."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import MutableMapping
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from callback_sink.sink import headers
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import DELIVERY_LIMIT, Topology
from callback_sink.worker.dlq import DeadLetter, DeadLetters, Selection, as_dict, render
from tests.broker import queue_depth
from tests.conftest import Recorder, callback, post, signed
from tests.test_cli_dlq import cli
from tests.waiting import drain_and_stop, until

Client = TestClient[Any, Any]


async def wait_for_depth(settings: Settings, queue: str, depth: int) -> None:
    async def reached() -> bool:
        return await queue_depth(settings.amqp_url, queue) == depth

    await until(reached, 20, what=f"{queue} to hold {depth}")


async def test_a_fixed_handler_replays_its_dead_letters_once_and_only_itself(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    broken = {"yes": True}

    async def crm(event: Event) -> None:
        if broken["yes"]:
            raise ConnectionError("CRM unreachable")

    worker = await start_worker(
        recorder.handler("tests.audit"), recorder.handler("tests.crm", behaviour=crm)
    )
    for call_id, operation in (("XXXX#XXXX_d1", "apply"), ("XXXX#XXXX_d2", "kick")):
        assert await post(ingress, signed(callback(call_id, operation=operation))) == 200
    dead_queue = f"{settings.topology_prefix}.dead"
    await wait_for_depth(settings, dead_queue, 2)

    topology = Topology(settings.topology_prefix)
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        letters = [d async for d in dlq.letters()]
    assert sorted(d.call_id for d in letters) == ["XXXX#XXXX_d1", "XXXX#XXXX_d2"]
    for d in letters:
        assert d.handlers == "tests.crm"
        assert d.error == "ConnectionError: CRM unreachable"
        assert d.attempts == settings.max_attempts
        assert d.age() != "?"
        assert "[redacted]" in render(d)
    assert await queue_depth(settings.amqp_url, dead_queue) == 2, "listing keeps them"

    broken["yes"] = False
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        replayed = [d async for d in dlq.replay(Selection(event="muc:apply"))]
    assert [d.call_id for d in replayed] == ["XXXX#XXXX_d1"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        replayed = [d async for d in dlq.replay(Selection(handler="tests.crm"))]
    assert [d.call_id for d in replayed] == ["XXXX#XXXX_d2"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        again = [d async for d in dlq.replay(Selection(call_id="XXXX#XXXX_d1"))]
    assert again == [], "a second replay finds nothing"

    await recorder.wait_for(4)
    await drain_and_stop(worker)  # a second run of a replayed letter would have landed by now
    assert sorted(e.call_id for e in recorder.of("tests.crm")) == ["XXXX#XXXX_d1", "XXXX#XXXX_d2"]
    assert sorted(e.call_id for e in recorder.of("tests.audit")) == [
        "XXXX#XXXX_d1",
        "XXXX#XXXX_d2",
    ]
    assert await queue_depth(settings.amqp_url, dead_queue) == 0


async def test_purge_deletes_only_what_it_is_asked_to(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    async def fail(event: Event) -> None:
        raise ValueError("no")

    await start_worker(recorder.handler("tests.fail", behaviour=fail), max_attempts=1)
    for call_id in ("XXXX#XXXX_p1", "XXXX#XXXX_p2"):
        assert await post(ingress, signed(callback(call_id))) == 200
    dead_queue = f"{settings.topology_prefix}.dead"
    await wait_for_depth(settings, dead_queue, 2)
    topology = Topology(settings.topology_prefix)
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        purged = [d async for d in dlq.purge(Selection(call_id="XXXX#XXXX_p1"))]
    assert [d.call_id for d in purged] == ["XXXX#XXXX_p1"]
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        assert [d.call_id async for d in dlq.letters()] == ["XXXX#XXXX_p2"]


async def test_a_replayed_dead_letter_runs_with_replay_true_on_every_worker_line_of_that_run(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    broken = {"yes": True}

    async def crm(event: Event) -> None:
        if broken["yes"]:
            raise ConnectionError("CRM unreachable")

    worker = await start_worker(recorder.handler("tests.crm", behaviour=crm), max_attempts=2)
    with capture_logs(processors=[merge_contextvars]) as before:
        assert await post(ingress, signed(callback("XXXX#XXXX_r1"))) == 200
        await wait_for_depth(settings, f"{settings.topology_prefix}.dead", 1)
    broken["yes"] = False
    with capture_logs(processors=[merge_contextvars]) as after:
        async with DeadLetters.open(settings.amqp_url, Topology(settings.topology_prefix)) as dlq:
            assert [d.call_id async for d in dlq.replay(Selection("XXXX#XXXX_r1"))] == [
                "XXXX#XXXX_r1"
            ]
        await recorder.wait_for(1)
        await drain_and_stop(worker)

    def handled(lines: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
        return [x for x in lines if x["event"] == "callback.handled"]

    assert len(handled(before)) == 2 and not any("replay" in x for x in before)
    [run] = handled(after)
    assert run["call_id"] == "XXXX#XXXX_r1" and run["outcome"] == "ok" and run["attempt"] == 1
    assert run["replay"] is True and run["replay_of"] == "attempts-exhausted"


async def test_dlq_show_twice_prints_the_same_letter_which_then_still_replays(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder
) -> None:
    broken = {"yes": True}

    async def crm(event: Event) -> None:
        if broken["yes"]:
            raise ConnectionError("CRM unreachable")

    worker = await start_worker(recorder.handler("tests.crm", behaviour=crm), max_attempts=1)
    assert await post(ingress, signed(callback("XXXX#XXXX_s1"))) == 200
    prefix = settings.topology_prefix
    await wait_for_depth(settings, f"{prefix}.dead", 1)

    shows = [await asyncio.to_thread(cli, prefix, "dlq", "show", "XXXX#XXXX_s1") for _ in "12"]
    assert [s.returncode for s in shows] == [0, 0], shows[0].stderr
    assert shows[0].stdout == shows[1].stdout, "looking changes nothing that is shown"
    text = shows[0].stdout.decode()
    assert "x-sink-error: CRM unreachable" in text
    assert "x-sink-error-type: ConnectionError" in text
    assert "x-delivery-count" not in text, "the broker's count of looks is not the letter's"
    traceback = getattr(headers, "TRACEBACK", None)
    if traceback is not None:  # the formatted traceback, indented under its header
        assert f"{traceback}:\n    Traceback (most recent call last):" in text
        assert "    ConnectionError: CRM unreachable" in text
    as_json = [await asyncio.to_thread(cli, prefix, "dlq", "show", "XXXX#XXXX_s1", "--json")
               for _ in "12"]  # fmt: skip
    assert as_json[0].stdout == as_json[1].stdout
    [letter] = [orjson.loads(x) for x in as_json[0].stdout.splitlines()]
    assert letter["error"] == "ConnectionError: CRM unreachable"
    assert letter["headers"]["x-sink-dead-reason"] == "attempts-exhausted"

    # Looked at more often than any delivery limit of a work queue: still there, still whole.
    topology = Topology(prefix)
    for _ in range(DELIVERY_LIMIT + 2):
        async with DeadLetters.open(settings.amqp_url, topology) as dlq:
            assert [render(d) async for d in dlq.letters()] == [text.rstrip("\n")]
    broken["yes"] = False
    async with DeadLetters.open(settings.amqp_url, topology) as dlq:
        assert [d.call_id async for d in dlq.replay(Selection("XXXX#XXXX_s1"))] == ["XXXX#XXXX_s1"]
    await recorder.wait_for(1)
    await drain_and_stop(worker)
    assert await queue_depth(settings.amqp_url, f"{prefix}.dead") == 0


def test_show_renders_nested_and_multi_line_headers_as_text_never_as_python_repr() -> None:
    letter = DeadLetter(
        call_id="XXXX#XXXX_n1", event_name="muc:apply", handlers="tests.crm",
        error="ValueError: no", attempts=1, reason="attempts-exhausted", last_failure="",
        body=b'{"callId": "XXXX#XXXX_n1", "security": "s"}',
        headers={
            "x-death": [{"count": 2, "queue": "q.delay.200",
                         "time": dt.datetime(2025, 3, 1, tzinfo=dt.UTC)}],
            "x-sink-traceback": "Traceback (most recent call last):\n  File x\nValueError: no",
        },
    )  # fmt: skip
    text = render(letter)
    assert text.splitlines()[:4] == [
        'x-death: [{"count":2,"queue":"q.delay.200","time":"2025-03-01T00:00:00+00:00"}]',
        "x-sink-traceback:",
        "    Traceback (most recent call last):",
        "      File x",
    ]
    assert "datetime" not in text and "{'" not in text and '"[redacted]"' in text
    shown = as_dict(letter)
    assert orjson.loads(orjson.dumps(shown))["headers"]["x-death"][0]["count"] == 2
