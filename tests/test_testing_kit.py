"""The testing kit builds valid callbacks and runs them through the worker's own decisions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from callback_sink.handlers import Event, Handler, Options, PermanentError, Registry, Retry
from callback_sink.pytest_plugin import SinkFactory, TesterFactory
from callback_sink.sink import names
from callback_sink.sink.errors import StartupError
from callback_sink.sink.examples import load_examples
from callback_sink.sink.signature import verify
from callback_sink.testing import (
    BrokerUnreachable,
    Outcome,
    RunningSink,
    SinkTester,
    make_body,
    make_event,
)
from tests.conftest import SECRET, post

OK, DUPLICATE, RETRY, DEAD = Outcome.OK, Outcome.DUPLICATE, Outcome.RETRY, Outcome.DEAD_LETTER
#: The one known name no callback decodes to (``message`` is told by chat_type chat/groupchat).
UNBUILDABLE = {"message:unknown"}


def handler(
    name: str, behaviour: Callable[[Event], Awaitable[None]], *subscriptions: str, **options: Any
) -> Handler:
    return Handler(f"tests.{name}", behaviour, subscriptions or ("*",), Options(**options))


async def succeed(event: Event) -> None:
    return None


async def fail(event: Event) -> None:
    raise ValueError("the CRM said no")


def failing_times(count: int) -> Callable[[Event], Awaitable[None]]:
    calls: list[Event] = []

    async def run(event: Event) -> None:
        calls.append(event)
        if len(calls) <= count:
            raise ConnectionError(f"down ({len(calls)})")

    return run


def test_make_event_builds_every_event_name_stamped_now_with_a_fresh_call_id() -> None:
    before = int(time.time() * 1000)  # now_ms() truncates to whole milliseconds too
    built = {name: make_event(name) for name in sorted(names.KNOWN_NAMES - UNBUILDABLE)}
    assert {name: event.name for name, event in built.items()} == {n: n for n in built}
    assert all(before <= event.timestamp <= time.time() * 1000 for event in built.values())
    examples = {e.body["callId"] for e in load_examples()}
    call_ids = {event.call_id for event in built.values()}
    assert len(call_ids) == len(built) and not call_ids & examples


def test_make_event_puts_overrides_where_the_decoder_reads_them() -> None:
    kick = make_event(
        "muc:kick", group_id="42", is_chatroom=True, from_="alice", to="bob",
        payload={"reason": "spam"},
    )  # fmt: skip
    assert (kick.group_id, kick.is_chatroom, kick.from_, kick.to) == ("42", True, "alice", "bob")
    assert kick.payload["reason"] == "spam" and kick.payload["operation"] == "kick"
    assert kick.payload["muc_id"].endswith("_42@conference.easemob.com")
    joined = make_event("group_op:join", group_id="43", is_chatroom=True)
    assert (joined.group_id, joined.is_chatroom) == ("43", True)
    assert make_event("muc:create", call_id="XXXX#XXXX_1", timestamp=5).call_id == "XXXX#XXXX_1"


def test_make_event_refuses_an_unknown_name_and_overrides_that_make_another_event() -> None:
    with pytest.raises(ValueError, match="not an event name"):
        make_event("muc:creat")
    with pytest.raises(ValueError, match="'muc:kick' callback instead"):
        make_event("muc:create", payload={"operation": "kick"})


def test_make_body_is_signed_with_the_given_secret() -> None:
    doc = orjson.loads(make_body("roster:add", secret="s3cret", to="bob"))
    assert verify(doc["callId"], doc["timestamp"], doc["security"], ["s3cret"])
    assert not verify(doc["callId"], doc["timestamp"], doc["security"], ["other"])


async def test_make_body_is_accepted_by_an_ingress_that_refuses_old_callbacks(
    ingress: TestClient[Any, Any],
) -> None:
    assert await post(ingress, make_body("muc:apply", secret=SECRET)) == 200
    old = make_body("muc:apply", secret=SECRET, timestamp=1644914583273)
    assert await post(ingress, old) != 200


async def test_a_handler_that_succeeds_is_handled_once_and_the_same_callback_again_is_a_duplicate(
) -> None:  # fmt: skip
    tester = SinkTester(handler("ok", succeed, "muc:create"))
    event = make_event("muc:create")
    report = await tester.run([event, event])
    assert report.outcomes("tests.ok") == [OK, DUPLICATE]
    again = await tester.run(event)
    assert again.outcomes("tests.ok") == [DUPLICATE]


async def test_a_failing_handler_is_retried_on_the_delay_tiers_then_dead_lettered() -> None:
    tester = SinkTester(handler("broken", fail), retry_delays=(1.0, 10.0), max_attempts=3)
    report = await tester.run(make_event("muc:apply"))
    steps = report.steps("tests.broken")
    assert [(s.outcome, s.attempt, s.delay) for s in steps] == [
        (RETRY, 1, 1.0), (RETRY, 2, 10.0), (DEAD, 3, None),
    ]  # fmt: skip
    assert steps[-1].reason == "attempts-exhausted"
    assert isinstance(steps[-1].error, ValueError)
    [dead] = report.dead_letters
    assert dead.handlers == ("tests.broken",)


async def test_the_retries_option_changes_the_attempts_before_dead_lettering() -> None:
    tester = SinkTester(handler("twice", fail, retries=2), handler("default", fail), max_attempts=4)
    report = await tester.run(make_event("muc:apply"))
    assert report.outcomes("tests.twice") == [RETRY, DEAD]
    assert report.outcomes("tests.default") == [RETRY, RETRY, RETRY, DEAD]


async def test_a_retry_runs_only_the_handler_that_failed() -> None:
    ran: list[str] = []

    async def count(event: Event) -> None:
        ran.append(event.call_id)

    tester = SinkTester(handler("steady", count), handler("flaky", failing_times(1)))
    report = await tester.run(make_event("roster:add"))
    assert report.outcomes("tests.steady") == [OK]
    assert report.outcomes("tests.flaky") == [RETRY, OK]
    assert len(ran) == 1
    assert report.callbacks[0].deliveries == 2


async def test_a_permanent_error_or_a_give_up_on_type_dead_letters_at_once() -> None:
    async def refuse(event: Event) -> None:
        raise PermanentError("malformed group id")

    tester = SinkTester(handler("refuse", refuse), handler("picky", fail, give_up_on=(ValueError,)))
    report = await tester.run(make_event("muc:kick"))
    for name in ("tests.refuse", "tests.picky"):
        [step] = report.steps(name)
        assert (step.outcome, step.reason, step.attempt) == (DEAD, "permanent", 1)


async def test_a_retry_delay_asked_for_is_rounded_up_to_a_delay_queue_tier() -> None:
    calls: list[int] = []

    async def later(event: Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Retry("rate limited", delay=3)

    report = await SinkTester(handler("later", later)).run(make_event("muc:kick"))
    assert [(s.outcome, s.delay) for s in report.steps()] == [(RETRY, 5), (OK, None)]


async def test_a_handler_running_past_its_timeout_is_cancelled_and_retried() -> None:
    calls: list[Event] = []

    async def slow_once(event: Event) -> None:
        calls.append(event)
        if len(calls) == 1:
            await asyncio.sleep(5)  # the scenario: a first run past its timeout

    report = await SinkTester(handler("slow", slow_once, timeout=0.05)).run(make_event("muc:ban"))
    [first, second] = report.steps("tests.slow")
    assert (first.outcome, type(first.error)) == (RETRY, TimeoutError)
    assert second.outcome == OK


async def test_the_start_up_and_shutdown_hooks_run_around_the_callbacks() -> None:
    seen: list[str] = []

    async def opened() -> None:
        seen.append("startup")

    async def closed() -> None:
        seen.append("shutdown")

    async def record(event: Event) -> None:
        seen.append(event.name)

    registry = Registry([handler("record", record)], [closed], [opened])
    async with SinkTester(registry=registry) as tester:
        await tester.run([make_event("muc:create"), make_event("muc:destroy")])
    assert seen == ["startup", "muc:create", "muc:destroy", "shutdown"]


async def test_a_failing_start_up_hook_stops_the_tester_before_any_callback_runs() -> None:
    async def broken() -> None:
        raise OSError("database refused the connection")

    ran: list[Event] = []

    async def record(event: Event) -> None:
        ran.append(event)

    tester = SinkTester(registry=Registry([handler("record", record)], [], [broken]))
    with pytest.raises(StartupError, match="database refused"):
        await tester.run(make_event("muc:create"))
    assert ran == []


def test_a_tester_without_any_handler_says_so() -> None:
    with pytest.raises(ValueError, match="no handlers found"):
        SinkTester(use_entry_points=False)


async def test_the_pytest_plugin_gives_every_test_a_tester_factory_and_make_event(
    sink_tester: TesterFactory, make_event: Callable[..., Event]
) -> None:
    report = await sink_tester(handler("ok", succeed, "roster")).run(make_event("roster:add"))
    assert report.outcomes() == [OK]


async def test_the_end_to_end_fixture_runs_a_real_ingress_and_worker(
    amqp_url: str, sink_e2e: SinkFactory
) -> None:
    sink = await sink_e2e(handler("seen", succeed, "muc:create"), retry_delays=(0.2,))
    event = await sink.send("muc:create", group_id="4242")
    [(name, seen)] = await sink.wait_handled(1, handler="tests.seen")
    assert (name, seen.call_id, seen.group_id) == ("tests.seen", event.call_id, "4242")


async def test_the_end_to_end_sink_fails_at_once_naming_an_unreachable_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SINK_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(BrokerUnreachable, match=r"not reachable at 127\.0\.0\.1:1"):
        await asyncio.wait_for(RunningSink.start(handler("x", succeed)), 10)


async def test_verdicts_is_a_deprecated_name_for_outcomes() -> None:
    tester = SinkTester(handler("ok", succeed))
    report = await tester.run(make_event("muc:apply"))
    with pytest.warns(DeprecationWarning, match="outcomes"):
        assert report.verdicts() == report.outcomes() == ["ok"]
