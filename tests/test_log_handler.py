"""The built-in log handler writes one ``event.received`` line per callback, run by the kit."""

from __future__ import annotations

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from callback_sink.handlers import log as log_handler
from callback_sink.sink import names
from callback_sink.testing import Outcome, SinkTester, make_event


async def test_the_log_handler_logs_what_arrived_once_per_callback() -> None:
    tester = SinkTester("callback_sink.handlers.log", use_entry_points=False)
    event = make_event("muc:kick", group_id="42", from_="alice", to="bob")
    with capture_logs(processors=[merge_contextvars]) as logs:
        report = await tester.run([event, event])
    assert report.outcomes(log_handler.log_event) == [Outcome.OK, Outcome.DUPLICATE]
    [line] = [line for line in logs if line["event"] == "event.received"]
    assert line["call_id"] == event.call_id and line["event_name"] == "muc:kick"
    assert (line["operation"], line["group_id"], line["from_"], line["to"]) == (
        "kick", "42", "alice", "bob",
    )  # fmt: skip
    assert line["sent_at_ms"] == event.timestamp


async def test_the_log_handler_takes_every_event_name() -> None:
    built = [make_event(name) for name in sorted(names.KNOWN_NAMES - {"message:unknown"})]
    report = await SinkTester("callback_sink.handlers.log", use_entry_points=False).run(built)
    assert report.outcomes(log_handler.log_event) == [Outcome.OK] * len(built)
