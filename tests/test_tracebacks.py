"""A failure line carries its traceback (bounded, without locals), and so does the dead letter;
``SINK_LOG_LEVEL`` keeps the lines the log-levels table says it keeps."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink import headers, levels, logs
from callback_sink.sink.settings import Settings
from tests import lookups
from tests.broker import take_all
from tests.conftest import callback, post, signed
from tests.processes import SinkProcess

Client = TestClient[Any, Any]
HELPER = Path(lookups.__file__).resolve()
HELPER_LINE = next(
    number for number, text in enumerate(HELPER.read_text("utf-8").splitlines(), 1)
    if text.rstrip().endswith("# the failing line")
)  # fmt: skip
#: How a traceback names the helper's failing frame.
WHERE = f'File "{HELPER}", line {HELPER_LINE}, in role_of'


def recurse(depth: int) -> None:
    secret = lookups.LOCAL_SECRET  # noqa: F841 - a local the traceback must not render
    if depth == 0:
        raise ValueError("deep down")
    recurse_again(depth - 1)


def recurse_again(depth: int) -> None:  # two functions: no frame repeats the one before
    recurse(depth)


def caught(depth: int) -> BaseException:
    try:
        recurse(depth)
    except ValueError as exc:
        return exc
    raise AssertionError("recurse did not raise")


def test_a_traceback_keeps_the_frames_nearest_the_error_and_no_locals() -> None:
    text = logs.traceback_of(caught(100))
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("ValueError: deep down")
    assert text.count('File "') == logs.TRACEBACK_FRAMES
    assert lookups.LOCAL_SECRET not in text


def test_a_long_traceback_is_cut_to_its_last_characters() -> None:
    error = caught(10)
    error.args = ("x" * 20_000,)
    text = logs.traceback_of(error)
    assert len(text) <= logs.TRACEBACK_CHARS
    assert text.startswith("[") and "characters cut]" in text.splitlines()[0]
    assert text.endswith("x" * 100)
    header = logs.traceback_of(error, logs.TRACEBACK_HEADER_CHARS)
    assert len(header) <= logs.TRACEBACK_HEADER_CHARS


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_failure_line_renders_its_traceback_in_either_format(
    log_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", out)
    logs.configure(log_format, "debug")
    try:
        logs.get("tests").warning("callback.handled", outcome="retry", exc_info=caught(3))
    finally:
        logs.configure("console", "debug")  # as tests/conftest.py has it
    out.flush()
    written = out.buffer.getvalue().decode()  # type: ignore[attr-defined]
    assert "ValueError: deep down" in written
    assert "line" in written and "in recurse" in written
    assert lookups.LOCAL_SECRET not in written
    if log_format == "json":
        line = orjson.loads(written)
        assert line["level"] == "warning"
        assert line["exception"].startswith("Traceback (most recent call last):")
    else:
        assert "\nTraceback (most recent call last):\n" in written


def worker_env(settings: Settings, redis_url: str, level: str) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url,
        "SINK_HANDLERS": "tests.lookups",
        "SINK_MAX_ATTEMPTS": "2",
        "SINK_RETRY_DELAYS": "0.2",
        "SINK_LOG_LEVEL": level,
    }


async def run_failing_worker(
    ingress: Client, settings: Settings, redis_url: str, level: str, lines: int
) -> tuple[SinkProcess, Any]:
    """A worker process at ``level`` given one callback whose handler always fails: its
    dead letter, once it is there and the worker logged ``lines`` ``callback.handled`` lines."""
    worker = SinkProcess("worker", worker_env(settings, redis_url, level))
    await worker.start(None)  # at warning or error there is no start-up line to wait for
    try:
        assert await post(ingress, signed(callback("XXXX#XXXX_lookup"))) == 200
        [dead] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.dead", 1, 30)
        await worker.wait_for_line("callback.handled", lines)
    finally:
        assert await worker.stop() == 0
    return worker, dead


def wrong_levels(worker: SinkProcess) -> list[dict[str, object]]:
    return [
        line for line in worker.lines
        if str(line.get("event", "")).startswith("callback.")
        and line["level"] not in levels.levels_of(str(line["event"]), line.get("outcome"))  # type: ignore[arg-type]
    ]  # fmt: skip


def assert_traceback_of_the_helper(line: dict[str, object]) -> None:
    assert (line["error_type"], line["error"]) == ("KeyError", "'alice'")
    exception = str(line["exception"])
    assert exception.startswith("Traceback (most recent call last):")
    assert WHERE in exception
    assert exception.endswith("KeyError: 'alice'")


async def test_at_warning_the_retry_and_the_dead_letter_lines_both_hold_the_helpers_traceback(
    ingress: Client, settings: Settings, redis_url: str
) -> None:
    worker, dead = await run_failing_worker(ingress, settings, redis_url, "warning", 2)
    retry, final = worker.events("callback.handled")
    assert (retry["outcome"], retry["level"], retry["attempt"]) == ("retry", "warning", 1)
    assert (final["outcome"], final["level"], final["attempt"]) == ("dead_letter", "error", 2)
    assert "dead_reason" not in retry and final["dead_reason"] == "attempts-exhausted"
    for line in (retry, final):
        assert line["call_id"] == "XXXX#XXXX_lookup"
        assert_traceback_of_the_helper(line)
    assert not worker.events("worker.started")  # info: below the level
    assert wrong_levels(worker) == []
    header = dead.headers[headers.TRACEBACK]
    assert WHERE in header and header.endswith("KeyError: 'alice'")
    assert len(header) <= logs.TRACEBACK_HEADER_CHARS
    everything = orjson.dumps(worker.lines).decode() + str(dead.headers)
    assert lookups.LOCAL_SECRET not in everything
    assert '"security"' not in everything


async def test_at_error_only_the_dead_letter_line_is_written(
    ingress: Client, settings: Settings, redis_url: str
) -> None:
    worker, _ = await run_failing_worker(ingress, settings, redis_url, "error", 1)
    [final] = worker.events("callback.handled")
    assert (final["outcome"], final["level"]) == ("dead_letter", "error")
    assert_traceback_of_the_helper(final)
    assert {line["level"] for line in worker.lines} == {"error"}
