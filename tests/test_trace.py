"""`callback-sink trace CALLID [LOGFILE…]` tells the life of one callback from the JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from callback_sink.sink import logs
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings
from callback_sink.trace_cmd import life, table
from tests.conftest import Recorder, callback, post, signed
from tests.processes import ROOT
from tests.test_cli_dlq import cli
from tests.test_dlq import wait_for_depth
from tests.waiting import drain_and_stop

Client = TestClient[Any, Any]
CALL_ID = "XXXX#XXXX_t1"


def line(time: str, event: str, **fields: Any) -> str:
    doc = {"event": event, "timestamp": f"2025-03-01T10:00:{time}Z", "level": "info", **fields}
    return orjson.dumps(doc).decode()


#: A callback that failed twice, was dead-lettered, replayed and then succeeded, as the
#: ingress, the worker and `dlq replay` log it (the worker's outcome words before the rename).
WORKER_LOG = [
    line("00.100000", "callback.accepted", call_id=CALL_ID, event_name="muc:apply", status=200,
         durable="broker", component="ingress"),
    line("00.150000", "callback.accepted", call_id="XXXX#XXXX_other", event_name="muc:apply"),
    line("00.200000", "callback.handled", call_id=CALL_ID, handler="tests.crm", outcome="failed",
         attempt=1, error_type="ConnectionError", error="CRM unreachable"),
    "not JSON: a stray print mentioning XXXX#XXXX_t1",
    line("00.500000", "callback.handled", call_id=CALL_ID, handler="tests.crm", outcome="dead",
         attempt=2, error_type="ConnectionError", error="CRM unreachable", level="error"),
    line("09.000000", "callback.handled", call_id=CALL_ID, handler="tests.crm", outcome="ok",
         attempt=1, replay=True, replay_of="attempts-exhausted"),
]  # fmt: skip
REPLAY_LOG = [
    "kubectl-prefix stdout F "
    + line("08.000000", "dlq.replayed", call_id=CALL_ID, replay_of="attempts-exhausted"),
    "1 dead letter(s) replayed",
]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "callback_sink", *args],
        input=stdin, capture_output=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_the_steps_of_a_callback_come_in_time_order_across_logs() -> None:
    steps = life(CALL_ID, [WORKER_LOG, REPLAY_LOG])
    assert [(s.step, s.handler, s.attempt, s.replay) for s in steps] == [
        ("accepted", None, None, False),
        ("retry", "tests.crm", 1, False),
        ("dead_letter", "tests.crm", 2, False),
        ("replayed", None, None, False),
        ("ok", "tests.crm", 1, True),
    ]
    assert steps[1].detail == "ConnectionError: CRM unreachable"
    assert steps[3].detail == "of attempts-exhausted"
    text = table(CALL_ID, steps)
    assert text.splitlines()[0] == f"callId {CALL_ID}: 5 step(s), 2025-03-01 UTC"
    assert "ok (replay)" in text.splitlines()[-1]


def test_the_unified_outcome_words_and_unknown_events_are_understood() -> None:
    lines = [
        line("01", "callback.handled", call_id=CALL_ID, handler="h", outcome="retry", attempt=1),
        line("02", "callback.handled", call_id=CALL_ID, handler="h", outcome="dead_letter"),
        line("03", "callback.rejected", call_id=CALL_ID, status=401, reason="bad signature"),
        line("04", "callback.some_new_line", call_id=CALL_ID),
        line("05", "callback.undecodable", message_id=CALL_ID, error="not JSON"),
        line("06", "callback.forged", call_id=CALL_ID, outcome="forged", handlers=["a", "b"],
             first_seen_as="muc:kick"),
        line("07", "callback.delivery_limit", call_id=CALL_ID, outcome="dead_letter",
             deliveries=21, handlers=["a"]),
    ]  # fmt: skip
    steps = life(CALL_ID, [lines])
    assert [s.step for s in steps] == [
        "retry", "dead_letter", "refused", "callback.some_new_line", "dead_letter", "forged",
        "dead_letter",
    ]  # fmt: skip
    assert (steps[5].handler, steps[5].detail) == ("a,b", "first seen as: muc:kick")
    assert steps[6].detail == "deliveries: 21"


def test_trace_reads_standard_input_and_prints_json_steps() -> None:
    out = run("trace", CALL_ID, "--json", stdin="\n".join(WORKER_LOG).encode())
    assert out.returncode == 0, out.stderr
    steps = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert [s["step"] for s in steps] == ["accepted", "retry", "dead_letter", "ok"]
    assert steps[-1]["replay"] is True and steps[-1]["event"] == "callback.handled"


def test_trace_on_an_unknown_call_id_says_so_and_exits_1(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("\n".join(WORKER_LOG))
    out = run("trace", "XXXX#XXXX_nobody", str(log))
    assert out.returncode == 1
    assert out.stdout == b""
    assert out.stderr.decode().strip() == (
        f"callback-sink: no JSON log line about call id XXXX#XXXX_nobody in {log}"
    )


@contextlib.contextmanager
def json_log(path: Path) -> Iterator[None]:
    """Everything this process logs, as the JSON lines a deployed sink writes, into ``path``."""
    with path.open("w") as out, contextlib.redirect_stdout(out):
        logs.configure("json", "debug")
        try:
            yield
        finally:
            logs.configure("console", "debug")  # as tests/conftest.py has it


async def test_trace_tells_a_real_callback_that_failed_twice_died_was_replayed_and_ran(
    ingress: Client, settings: Settings, start_worker: Any, recorder: Recorder, tmp_path: Path
) -> None:
    broken = {"yes": True}

    async def crm(event: Event) -> None:
        if broken["yes"]:
            raise ConnectionError("CRM unreachable")

    worker_log, replay_log = tmp_path / "sink.log", tmp_path / "replay.log"
    call_id = "XXXX#XXXX_trace1"
    with json_log(worker_log):
        worker = await start_worker(recorder.handler("tests.crm", behaviour=crm), max_attempts=2)
        assert await post(ingress, signed(callback(call_id))) == 200
        await wait_for_depth(settings, f"{settings.topology_prefix}.dead", 1)
        broken["yes"] = False
        replay = await asyncio.to_thread(cli, settings.topology_prefix, "dlq", "replay", call_id)
        assert replay.returncode == 0, replay.stderr
        replay_log.write_bytes(replay.stdout)
        await recorder.wait_for(1)
        await drain_and_stop(worker)

    shown = await asyncio.to_thread(run, "trace", call_id, str(worker_log), str(replay_log))
    assert shown.returncode == 0, shown.stderr
    print(shown.stdout.decode())
    rows = shown.stdout.decode().splitlines()
    assert rows[0].startswith(f"callId {call_id}: 5 step(s)")
    assert [r.split()[1:3] for r in rows[2:]] == [
        ["accepted", "-"],
        ["retry", "tests.crm"],
        ["dead_letter", "tests.crm"],
        ["replayed", "tests.crm"],  # the handlers it puts back to work
        ["ok", "(replay)"],
    ]

    as_json = await asyncio.to_thread(run, "trace", call_id, str(replay_log), str(worker_log),
                                      "--json")  # fmt: skip
    steps = [orjson.loads(x) for x in as_json.stdout.splitlines()]
    assert [(s["step"], s["attempt"], s["replay"]) for s in steps] == [
        ("accepted", None, False),
        ("retry", 1, False),
        ("dead_letter", 2, False),
        ("replayed", None, False),
        ("ok", 1, True),
    ]
