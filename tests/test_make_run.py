"""``make run`` with ``SINK_LOG_FORMAT=json``: stdout is JSON lines only (a log shipper reads
it as is); make's own echo, pip, ensure-services and the sink's notices go to stderr."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from pathlib import Path

import orjson
import pytest

from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.conftest import SECRET
from tests.needs import missing
from tests.processes import QUIET, ROOT

#: What ``make run`` writes once ingress and worker are both up.
STARTED = {"worker.started", "ingress.listening"}
#: Start-up of a set-up venv, services up: seconds. A cold start does not belong here.
START_WITHIN = 60.0
#: A graceful stop: the drain delay is 0 (QUIET), the worker has nothing in hand.
STOP_WITHIN = 30.0


def _recipe(target: str) -> tuple[str, list[str]]:
    """The prerequisites and the recipe lines of ``target`` in the Makefile."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line[1:])
    return lines[start].partition(":")[2].strip(), recipe


def test_the_run_recipe_echoes_none_of_its_lines() -> None:
    prerequisites, recipe = _recipe("run")
    assert prerequisites == ""  # a prerequisite's recipe would be echoed on stdout
    assert recipe and all(line.startswith("@") for line in recipe)
    # Whatever the set-up prints (pip, a fresh venv, ensure-services) is for stderr.
    assert all(line.endswith(">&2") for line in recipe if "$(MAKE)" in line)


async def test_make_run_writes_only_json_lines_on_stdout(
    settings: Settings, tmp_path: Path
) -> None:
    if shutil.which("make") is None:
        missing("make is not installed")
    # A stamp newer than pyproject.toml: `make run` finds the venv installed (this one) and
    # does not reinstall it, even while someone edits pyproject.toml.
    stamp = tmp_path / "installed"
    stamp.touch()
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # as from a shell, not from make
    }
    env.update(
        QUIET,
        SINK_LOG_FORMAT="json",
        SINK_PORT=str(port),
        SINK_TOPOLOGY_PREFIX=settings.topology_prefix,
        SINK_AMQP_URL=settings.amqp_url,
        SINK_SECRETS=SECRET,
        SINK_SPOOL_DIR=str(tmp_path / "spool"),
    )
    with (tmp_path / "stderr").open("wb") as stderr:
        make = await asyncio.create_subprocess_exec(
            "make", "run", f"STAMP={stamp}", cwd=ROOT, env=env, start_new_session=True,
            stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert make.stdout is not None
    events: list[str] = []
    try:
        async with asyncio.timeout(START_WITHIN):
            while not STARTED.issubset(events):
                raw = await make.stdout.readline()
                assert raw, f"make run ended before starting: {events}"
                events.append(_event(raw))
    finally:
        _signal_group(make.pid, signal.SIGINT)  # Ctrl-C at the terminal: the whole group
        try:
            async with asyncio.timeout(STOP_WITHIN):
                rest = await make.stdout.read()
                await make.wait()
        except TimeoutError:
            _signal_group(make.pid, signal.SIGKILL)
            raise
    events += [_event(raw) for raw in rest.splitlines()]
    assert "worker.stopped" in events or "ingress.stopped" in events
    notices = (tmp_path / "stderr").read_text()
    assert re.search(rf"callbacks URL http://\S+:{port}/", notices)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _event(raw: bytes) -> str:
    """The ``event`` of one stdout line, which must be a JSON log object."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pytest.fail(f"not a JSON line on stdout: {raw!r}")
    assert isinstance(line, dict) and isinstance(line.get("event"), str), raw
    return line["event"]
