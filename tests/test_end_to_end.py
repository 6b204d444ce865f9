"""Signed callbacks go from HTTP through RabbitMQ to their handlers, each exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.sink.events import Event
from callback_sink.sink.examples import load_examples, resign
from tests.conftest import SECRET, Recorder, callback, post, signed
from tests.waiting import drain_and_stop, until

Client = TestClient[Any, Any]


async def test_every_spec_example_reaches_a_handler_once_under_its_name(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    worker = await start_worker(recorder.handler("tests.all"))
    examples = load_examples()
    expected: dict[str, tuple[str, str | None, bool]] = {}
    for index, example in enumerate(examples):
        # The spec reuses callIds across examples; each one here is a distinct callback.
        body = resign(example.body, SECRET, call_id=f"{example.body['callId']}-{index}")
        assert await post(ingress, signed(body)) == 200
        payload = body.get("payload", {})
        if body.get("chat_type") == "muc":
            expected[body["callId"]] = (
                f"muc:{payload['operation']}",
                body["group_id"],
                payload["is_chatroom"],
            )
    await recorder.wait_for(len(examples))
    await drain_and_stop(worker)  # a duplicate delivery, if any, has landed now
    seen = Counter(event.call_id for event in recorder.of("tests.all"))
    assert len(seen) == len(examples) == 52
    assert set(seen.values()) == {1}
    by_id = {event.call_id: event for event in recorder.of("tests.all")}
    assert len(expected) == 48
    for call_id, (name, group_id, is_chatroom) in expected.items():
        event = by_id[call_id]
        assert (event.name, event.group_id, event.is_chatroom) == (name, group_id, is_chatroom)
    names = {event.name for event in by_id.values()}
    assert {"session:login", "roster:remote_accept", "group_op:join", "offline:groupchat"} <= names


async def test_the_same_callback_posted_five_times_at_once_runs_each_handler_once(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    await start_worker(recorder.handler("tests.a"), recorder.handler("tests.b", ("muc",)))
    body = signed(callback("XXXX#XXXX_same"))
    with capture_logs() as logs:
        statuses = await asyncio.gather(*(post(ingress, body) for _ in range(5)))
        assert statuses == [200] * 5

        def outcomes() -> list[tuple[str, str]]:
            return sorted(
                (line["handler"], line["outcome"])
                for line in logs
                if line["event"] == "callback.handled"
            )

        # Every copy is accounted for, including those deferred while the first one ran.
        await until(lambda: len(outcomes()) >= 10, 20, what="10 handled lines")
    assert outcomes() == sorted(
        [("tests.a", "ok"), ("tests.b", "ok")]
        + [("tests.a", "duplicate"), ("tests.b", "duplicate")] * 4
    )
    assert len(recorder.of("tests.a")) == 1
    assert len(recorder.of("tests.b")) == 1


async def test_handlers_get_only_the_events_they_subscribed_to(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    worker = await start_worker(
        recorder.handler("tests.apply", ("muc:apply",)),
        recorder.handler("tests.roster", ("roster",)),
        recorder.handler("tests.all", ("*",)),
    )
    assert await post(ingress, signed(callback(operation="apply"))) == 200
    assert await post(ingress, signed(callback(operation="kick"))) == 200
    await recorder.wait_for(3)
    await drain_and_stop(worker)
    assert [e.name for e in recorder.of("tests.apply")] == ["muc:apply"]
    assert recorder.of("tests.roster") == []
    assert sorted(e.name for e in recorder.of("tests.all")) == ["muc:apply", "muc:kick"]


async def test_a_handler_failing_once_succeeds_on_retry_and_its_neighbour_runs_once(
    ingress: Client, start_worker: Any, recorder: Recorder
) -> None:
    failures: Counter[str] = Counter()

    async def fail_first_time(event: Event) -> None:
        failures[event.call_id] += 1
        if failures[event.call_id] == 1:
            raise RuntimeError("downstream timed out")

    worker = await start_worker(
        recorder.handler("tests.steady"),
        recorder.handler("tests.flaky", behaviour=fail_first_time),
    )
    assert await post(ingress, signed(callback("XXXX#XXXX_flaky"))) == 200
    await recorder.wait_for(2)
    await drain_and_stop(worker)
    assert failures["XXXX#XXXX_flaky"] == 2
    assert len(recorder.of("tests.flaky")) == 1
    assert len(recorder.of("tests.steady")) == 1
