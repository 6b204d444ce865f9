"""Every line about a callback is logged at the level of the one table in
``callback_sink.sink.levels``, and ``docs/reference/log-levels.md`` is that table."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from callback_sink.handlers import Event, Handler, Options, PermanentError
from callback_sink.sink import levels
from callback_sink.sink.metrics import OUTCOMES
from callback_sink.sink.outcomes import LEVELS, Outcome
from callback_sink.testing import SinkTester, make_event

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "log-levels.md"
#: The project's sources, each once (the callback_sink/<name> links point at the same files).
SOURCES = ("sink", "worker", "handlers", "ingress", "easemob", "callback_sink")
LEVEL_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def test_the_log_levels_page_is_generated_from_the_table() -> None:
    assert PAGE.read_text(encoding="utf-8") == levels.markdown(), (
        "docs/reference/log-levels.md is stale: "
        "python -m callback_sink.sink.levels > docs/reference/log-levels.md"
    )


def test_one_outcome_vocabulary_names_the_metric_labels_and_each_has_a_level() -> None:
    assert OUTCOMES == ("ok", "duplicate", "retry", "dead_letter", "deferred", "forged")
    assert set(LEVELS) == set(Outcome)
    assert {LEVELS[Outcome.RETRY], LEVELS[Outcome.DEAD_LETTER]} == {"warning", "error"}
    assert LEVELS[Outcome.OK] == LEVELS[Outcome.DUPLICATE] == "info"


def _sources() -> list[Path]:
    found = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            if folder == "callback_sink" and len(parts) > 2 and parts[1] in SOURCES:
                continue  # a link to a top-level folder, read there
            found.append(path)
    return found


def logged_levels(tree: ast.AST) -> list[tuple[str, str | None, str, int]]:
    """``(event, outcome, level, line)`` of every ``log.<level>("callback.…")`` call, and of
    every ``_log(Outcome.X, "callback.…")`` call (logged at ``LEVELS[Outcome.X]``)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func, first = node.func, node.args[0]
        if isinstance(func, ast.Attribute) and func.attr in LEVEL_METHODS:
            if isinstance(first, ast.Constant) and str(first.value).startswith("callback."):
                level = "error" if func.attr in ("exception", "critical") else func.attr
                found.append((str(first.value), None, level, node.lineno))
        elif isinstance(func, ast.Name) and func.id == "_log" and len(node.args) >= 2:
            event = node.args[1]
            if not isinstance(event, ast.Constant):
                continue
            # _log(Outcome.X, ...) logs at LEVELS[X]; _log(outcome, ...) at any outcome's
            # level, so each outcome the table lists for the event must have LEVELS' level.
            named = isinstance(first, ast.Attribute) and first.attr in Outcome.__members__
            outcomes = [Outcome[first.attr]] if named else [
                line.outcome for line in levels.LINES
                if line.event == event.value and line.outcome is not None
            ]  # fmt: skip
            for outcome in outcomes or list(Outcome):
                found.append((str(event.value), outcome.value, LEVELS[outcome], node.lineno))
    return found


def test_every_callback_line_in_the_code_is_logged_at_the_level_of_the_table() -> None:
    wrong, seen = [], set()
    for path in _sources():
        for event, outcome, level, line in logged_levels(ast.parse(path.read_text("utf-8"))):
            seen.add(event)
            if level not in levels.levels_of(event, outcome):
                table = sorted(levels.levels_of(event, outcome)) or "nothing"
                where = f"{path.relative_to(ROOT)}:{line}"
                wrong.append(f"{where}: {event} ({outcome}) at {level}, the table says {table}")
    assert wrong == []
    assert {"callback.handled", "callback.forged", "callback.delivery_limit"} <= seen


def test_the_code_scan_sees_a_line_at_the_wrong_level() -> None:
    code = 'log.error("callback.forged")\n_log(Outcome.RETRY, "callback.handled")\n'
    found = logged_levels(ast.parse(code))
    assert found == [("callback.forged", None, "error", 1),
                     ("callback.handled", "retry", "warning", 2)]  # fmt: skip
    assert "error" not in levels.levels_of("callback.forged", None)


async def fail(event: Event) -> None:
    raise RuntimeError("the CRM is down")


async def refuse(event: Event) -> None:
    raise PermanentError("no such group")


async def succeed(event: Event) -> None:
    return None


def _handler(name: str, behaviour: Any) -> Handler:
    return Handler(f"tests.{name}", behaviour, ("muc",), Options())


def _check(lines: list[dict[str, Any]]) -> list[str]:
    return [
        f"{line['event']} ({line.get('outcome')}) at {line['log_level']}"
        for line in lines
        if str(line["event"]).startswith("callback.")
        and line["log_level"] not in levels.levels_of(line["event"], line.get("outcome"))
    ]


async def test_every_outcome_a_delivery_can_have_is_logged_at_the_level_of_the_table() -> None:
    tester = SinkTester(
        _handler("ok", succeed), _handler("broken", fail), _handler("refused", refuse),
        max_attempts=2, retry_delays=(0.1,),
    )  # fmt: skip
    apply = make_event("muc:apply")
    with capture_logs() as logs:
        await tester.run([apply, apply, make_event("muc:kick", call_id=apply.call_id)])
    assert _check(logs) == []
    outcomes = {(line["event"], line.get("outcome"), line["log_level"]) for line in logs}
    assert outcomes >= {
        ("callback.handled", "ok", "info"),
        ("callback.handled", "duplicate", "info"),
        ("callback.handled", "retry", "warning"),
        ("callback.handled", "dead_letter", "error"),
        ("callback.forged", "forged", "warning"),
    }


async def test_a_crash_loop_dead_letter_is_an_error_line() -> None:
    tester = SinkTester(_handler("broken", fail), max_attempts=10, max_deliveries=2)
    with capture_logs() as logs:
        report = await tester.run(make_event("muc:apply"))
    assert [d.reason for d in report.dead_letters] == ["delivery-limit"]
    assert report.dead_letters[0].handlers == ("tests.broken",)
    [limit] = [line for line in logs if line["event"] == "callback.delivery_limit"]
    assert (limit["log_level"], limit["outcome"]) == ("error", "dead_letter")
    assert _check(logs) == []


@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_table_has_a_line_for_each_outcome(outcome: Outcome) -> None:
    assert any(line.outcome is outcome for line in levels.LINES)
