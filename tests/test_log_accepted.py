"""``SINK_LOG_ACCEPTED=false`` drops the per-callback success lines and nothing else: a
callback that goes well writes no line of its own, one that is refused or fails still does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callback_sink.handlers import Event, Handler, Options
from callback_sink.sink.settings import Settings
from callback_sink.testing import SinkTester, make_event
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


def test_success_lines_are_on_unless_turned_off() -> None:
    assert Settings().log_accepted is True
    assert Settings.from_env({"SINK_LOG_ACCEPTED": "false"}).log_accepted is False


@pytest.mark.parametrize("log_accepted", [True, False])
async def test_the_ingress_logs_an_accepted_callback_only_when_asked_and_a_refusal_always(
    serve: Serve, log_accepted: bool
) -> None:
    ingress = await serve(log_accepted=log_accepted)
    good, forged = signed(callback()), signed(callback(), "wrong-secret")
    with capture_logs() as logs:
        assert await post(ingress, good) == 200
        assert await post(ingress, forged) == 401
    events = [line["event"] for line in logs]
    assert events.count("callback.accepted") == (1 if log_accepted else 0)
    assert events.count("callback.rejected") == 1


async def succeed(event: Event) -> None:
    return None


async def fail(event: Event) -> None:
    raise RuntimeError("the CRM is down")


@pytest.mark.parametrize("log_accepted", [True, False])
async def test_the_worker_logs_ok_and_duplicate_only_when_asked_and_failures_always(
    log_accepted: bool,
) -> None:
    tester = SinkTester(
        Handler("tests.ok", succeed, ("muc",), Options()),
        Handler("tests.broken", fail, ("muc",), Options()),
        max_attempts=2, retry_delays=(0.1,), log_accepted=log_accepted,
    )  # fmt: skip
    apply = make_event("muc:apply")
    with capture_logs() as logs:
        report = await tester.run([apply, apply])
    lines = [(x["handler"], x["outcome"]) for x in logs if x["event"] == "callback.handled"]
    failed = [("tests.broken", "retry"), ("tests.broken", "dead_letter")]
    succeeded = [("tests.ok", "ok"), ("tests.ok", "duplicate")]
    assert [line for line in lines if line[0] == "tests.broken"] == failed * 2
    assert [line for line in lines if line[0] == "tests.ok"] == (succeeded if log_accepted else [])
    # The outcome is the same either way: only its line is left out.
    assert report.outcomes("tests.ok") == ["ok", "duplicate"]
