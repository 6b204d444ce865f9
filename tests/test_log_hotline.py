"""A hot line (``callback.accepted``) is the line the logger would write, in one step."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator

import orjson
from structlog.contextvars import bound_contextvars
from structlog.testing import capture_logs

from callback_sink.sink import logs

STAMP = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')
FIELDS = {"call_id": "c-1", "event_name": "muc:create", "status": 200, "duration_ms": 1.5}


@contextlib.contextmanager
def stdout_bytes() -> Iterator[io.BytesIO]:
    """What this process writes to standard output meanwhile, as bytes."""
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, write_through=True)
    saved, sys.stdout = sys.stdout, out
    try:
        yield raw
    finally:
        sys.stdout = saved
        out.detach()  # collected, the wrapper would close ``raw``


@contextlib.contextmanager
def configured(log_format: str, level: str) -> Iterator[None]:
    logs.configure(log_format, level)
    try:
        yield
    finally:
        logs.configure("console", "debug")  # as tests/conftest.py has it


def test_the_hot_line_is_the_loggers_line_byte_for_byte_bar_the_time_stamp() -> None:
    hot = logs.HotLine("ingress", "callback.accepted")
    # the bound context is merged in, as structlog's processor does
    with configured("json", "info"), stdout_bytes() as out, bound_contextvars(app="appkey-1"):
        logs.get("ingress").info("callback.accepted", **FIELDS, token="s3cret")
        hot(**FIELDS, token="s3cret")
    chain, fast = out.getvalue().splitlines()
    assert STAMP.search(fast), fast
    assert STAMP.sub(b"", fast) == STAMP.sub(b"", chain)
    doc = orjson.loads(fast)
    assert list(doc) == [
        "component", *FIELDS, "token", "event", "app", "level", "timestamp"
    ]  # fmt: skip
    assert doc["token"] == logs.REDACTED and b"s3cret" not in out.getvalue()


def test_the_hot_line_obeys_the_level() -> None:
    hot = logs.HotLine("ingress", "callback.accepted")
    with configured("json", "warning"), stdout_bytes() as out:
        hot(**FIELDS)
    assert out.getvalue() == b""


def test_under_the_console_format_or_a_capture_the_hot_line_goes_through_the_logger() -> None:
    hot = logs.HotLine("ingress", "callback.accepted")
    with configured("console", "info"), stdout_bytes() as out:
        hot(**FIELDS)
    text = out.getvalue().decode()
    assert "callback.accepted" in text and not text.startswith("{")
    with configured("json", "info"), capture_logs() as seen, stdout_bytes() as out:
        hot(**FIELDS)
    assert out.getvalue() == b""
    assert seen == [{"event": "callback.accepted", "log_level": "info", "component": "ingress",
                     **FIELDS}]  # fmt: skip
