"""`dlq list` and `dlq show` stream from the dead-letter queue and leave every message there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import orjson
import pytest

from callback_sink.sink.topology import Topology, declare
from callback_sink.sink.topology import delete as delete_topology
from tests.broker import queue_depth
from tests.processes import ROOT

#: The size of the backlog, and of each dead letter's body, in the memory test.
BACKLOG, BODY_BYTES = 20_000, 2048
#: What `dlq list --limit 10` may use at most on that backlog.
RSS_LIMIT_MB = 100


def cli(prefix: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SINK_TOPOLOGY_PREFIX": prefix}
    with tempfile.TemporaryDirectory() as cwd:  # whatever it writes lands in a temporary place
        return subprocess.run(
            [sys.executable, "-m", "callback_sink", *args],
            capture_output=True, cwd=cwd, env=env, timeout=60,
        )  # fmt: skip


#: Runs the command line and, at exit, writes the process's own peak resident size (VmHWM:
#: the high-water mark of this very address space) to a file. ``wait4``'s ``ru_maxrss`` would
#: also count the pages of the pytest process this child was forked from, before its exec.
_MEASURE = """
import atexit, re, runpy, sys
def _peak(path):
    status = open('/proc/self/status').read()
    open(path, 'w').write(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))
atexit.register(_peak, sys.argv[1])
sys.argv = ['callback-sink', *sys.argv[2:]]
runpy.run_module('callback_sink', run_name='__main__')
"""


def measured(prefix: str, *args: str) -> tuple[int, bytes, bytes, int]:
    """Run the command line; its exit code, output and peak resident size in KiB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SINK_TOPOLOGY_PREFIX": prefix}
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        # In the temporary directory: a slip of the arguments once wrote the figure to ./dlq.
        run = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(peak), *args],
            capture_output=True, cwd=tmp, env=env, timeout=120,
        )  # fmt: skip
        return run.returncode, run.stdout, run.stderr, int(peak.read_text())


def dead_letter(index: int) -> aio_pika.Message:
    doc = {"callId": f"XXXX#XXXX_{index}", "security": "s" * 32, "pad": "x" * BODY_BYTES}
    return aio_pika.Message(
        orjson.dumps(doc),
        message_id=f"XXXX#XXXX_{index}",
        headers={"x-sink-event": "muc:kick" if index % 2 else "muc:apply",
                 "x-sink-failed-handlers": "tests.crm", "x-sink-error": "CRM down"},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )  # fmt: skip


async def publish_dead_letters(amqp_url: str, topology: Topology, count: int) -> None:
    """Fill the dead-letter queue directly, confirmed, a thousand publishes in flight."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare(channel, topology)
        exchange = await channel.get_exchange(topology.dead_exchange, ensure=False)
        for start in range(0, count, 1000):
            await asyncio.gather(
                *(exchange.publish(dead_letter(i), routing_key="")
                  for i in range(start, min(start + 1000, count)))
            )  # fmt: skip
    finally:
        await connection.close()


@pytest.fixture
async def topology(amqp_url: str) -> AsyncIterator[Topology]:
    topology = Topology(f"test-{uuid.uuid4().hex[:12]}")
    yield topology
    connection = await aio_pika.connect(amqp_url)
    try:
        await delete_topology(await connection.channel(), topology, [])
    finally:
        await connection.close()


async def test_dlq_list_limit_10_on_20000_dead_letters_stays_small_and_keeps_them_all(
    amqp_url: str, topology: Topology
) -> None:
    await publish_dead_letters(amqp_url, topology, BACKLOG)
    assert await queue_depth(amqp_url, topology.dead_queue) == BACKLOG

    code, out, err, peak_kb = await asyncio.to_thread(
        measured, topology.prefix, "dlq", "list", "--limit", "10"
    )
    assert code == 0, err.decode()
    rows = out.decode().splitlines()
    assert len(rows) == 1 + 10 + 1, out.decode()  # header, ten letters, footer
    assert rows[-1] == f"10 of {BACKLOG} dead letter(s) shown (--limit, --event, --handler)"
    print(f"dlq list --limit 10 on {BACKLOG} dead letters: peak RSS {peak_kb / 1024:.1f} MiB")
    assert peak_kb / 1024 < RSS_LIMIT_MB
    assert await queue_depth(amqp_url, topology.dead_queue) == BACKLOG


async def test_dlq_list_json_prints_one_object_per_dead_letter_with_the_signature_hidden(
    amqp_url: str, topology: Topology
) -> None:
    await publish_dead_letters(amqp_url, topology, 5)
    out = await asyncio.to_thread(cli, topology.prefix, "dlq", "list", "--json", "--limit", "3")
    assert out.returncode == 0, out.stderr
    letters = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [d["call_id"] for d in letters] == ["XXXX#XXXX_0", "XXXX#XXXX_1", "XXXX#XXXX_2"]
    assert letters[1]["event"] == "muc:kick" and letters[1]["handlers"] == ["tests.crm"]
    assert {d["callback"]["security"] for d in letters} == {"[redacted]"}
    assert await queue_depth(amqp_url, topology.dead_queue) == 5


async def test_dlq_show_and_list_by_event_find_letters_deep_in_the_queue_and_keep_them(
    amqp_url: str, topology: Topology
) -> None:
    await publish_dead_letters(amqp_url, topology, 300)
    show = await asyncio.to_thread(cli, topology.prefix, "dlq", "show", "XXXX#XXXX_287")
    assert show.returncode == 0, show.stderr
    assert b"x-sink-error: CRM down" in show.stdout and b"[redacted]" in show.stdout
    kicks = await asyncio.to_thread(
        cli, topology.prefix, "dlq", "list", "--event", "muc:kick", "--limit", "200"
    )
    assert kicks.stdout.decode().count(" muc:kick ") == 150
    assert await queue_depth(amqp_url, topology.dead_queue) == 300


async def test_dlq_replay_by_event_with_a_limit_moves_only_those_to_the_work_queue(
    amqp_url: str, topology: Topology
) -> None:
    await publish_dead_letters(amqp_url, topology, 10)
    out = await asyncio.to_thread(
        cli, topology.prefix, "dlq", "replay", "--event", "muc:kick", "--limit", "3"
    )
    assert out.returncode == 0, out.stderr
    *logged, summary = out.stdout.decode().splitlines()
    assert summary == "3 dead letter(s) replayed"
    replayed = [orjson.loads(line) for line in logged]
    assert [x["event"] for x in replayed] == ["dlq.replayed"] * 3, "one log line per callback"
    assert {x["event_name"] for x in replayed} == {"muc:kick"}
    assert all(x["call_id"].startswith("XXXX#XXXX_") for x in replayed)
    assert out.stderr == b"", "no progress line when stderr is not a terminal"
    assert await queue_depth(amqp_url, topology.work_queue) == 3
    assert await queue_depth(amqp_url, topology.dead_queue) == 7
    rest = await asyncio.to_thread(cli, topology.prefix, "dlq", "list", "--json")
    events = [orjson.loads(line)["event"] for line in rest.stdout.splitlines()]
    assert events.count("muc:kick") == 2 and events.count("muc:apply") == 5
