"""The command line: `run` with no configuration, then `send` from a second shell."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from callback_sink.sink.settings import Settings
from callback_sink.sink.signature import sign
from callback_sink.testing.ports import free_port
from tests.processes import ROOT, SinkProcess


def sign_command(body: Path, *options: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "callback_sink", "sign", str(body), "--secret", "s3cr3t",
         *options],
        capture_output=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    signed: dict[str, Any] = orjson.loads(out.stdout)
    return signed


def test_sign_stamps_the_current_time_and_a_matching_security(tmp_path: Path) -> None:
    body = tmp_path / "callback.json"
    body.write_bytes(orjson.dumps({"callId": "XXXX#XXXX_1", "timestamp": 1644914583273}))
    before = time.time() * 1000
    signed = sign_command(body)
    assert before - 1000 <= signed["timestamp"] <= time.time() * 1000
    assert signed["security"] == sign("XXXX#XXXX_1", "s3cr3t", signed["timestamp"])


def test_sign_keep_timestamp_signs_the_bodys_own_time(tmp_path: Path) -> None:
    body = tmp_path / "callback.json"
    body.write_bytes(orjson.dumps({"callId": "XXXX#XXXX_1", "timestamp": 1644914583273}))
    signed = sign_command(body, "--keep-timestamp")
    assert signed["timestamp"] == 1644914583273
    assert signed["security"] == sign("XXXX#XXXX_1", "s3cr3t", 1644914583273)


def test_every_command_has_help() -> None:
    for command in ("ingress", "worker", "run", "sign", "send"):
        out = subprocess.run(
            [sys.executable, "-m", "callback_sink", command, "--help"],
            capture_output=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert b"usage: callback-sink" in out.stdout


def test_a_bad_setting_stops_start_up_naming_the_variable() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "callback_sink", "worker"],
        capture_output=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "SINK_PREFETCH": "many"},
    )  # fmt: skip
    assert out.returncode == 2
    assert b"SINK_PREFETCH" in out.stderr


async def test_run_without_configuration_then_send_gets_every_example_handled(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    # `run` keeps its generated secret in the current directory: use a scratch one.
    run_cwd = tmp_path
    run = SinkProcess(
        "run",
        {"SINK_PORT": str(port), "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
         "SINK_SPOOL_DIR": str(tmp_path / "spool")},
        cwd=run_cwd,
    )  # fmt: skip
    run.env.pop("SINK_SECRETS", None)
    run.env.pop("SINK_SECRETS_FILE", None)
    try:
        await run.start("worker.started")
        secret = (run_cwd / ".sink-dev-secret").read_text().strip()
        printed = " ".join(str(line.get("text", "")) for line in run.events("stdout"))
        assert secret in printed and f"http://127.0.0.1:{port}/callbacks" in printed

        send = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callback_sink", "send", f"http://127.0.0.1:{port}/callbacks",
            cwd=run_cwd, env=run.env, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(send.communicate(), 60)
        assert send.returncode == 0, out.decode()
        assert out.decode().count("\n200 ") + out.decode().startswith("200 ") == 52
        await run.wait_for_line("callback.handled", count=52, within=30)
        handled = run.events("callback.handled")
        assert {line["outcome"] for line in handled} == {"ok"}
        assert len({line["call_id"] for line in handled}) == 52
    finally:
        await run.stop()
