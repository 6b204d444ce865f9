"""Ordered mode across processes: 20 groups × 200 callbacks, interleaved, through an ingress of
two processes and three workers, one of which is SIGKILLed mid-run: every group's handler
sequence is the order its callbacks were accepted in."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import orjson
import pytest

from callback_sink.sink.examples import now_ms
from callback_sink.sink.settings import Settings
from callback_sink.sink.signature import sign
from callback_sink.sink.topology import Topology, delete
from tests.faults.harness import free_port
from tests.ordered_recorder import timelines
from tests.processes import SinkProcess

pytestmark = pytest.mark.faults

GROUPS = 20
PER_GROUP = 200
SECRET = "ordered-secret"


def body(group: str, seq: int) -> bytes:
    call_id = f"XXXX#XXXX_{uuid.uuid4().int % 10**18}"
    stamp = now_ms()
    doc = {
        "chat_type": "muc", "callId": call_id, "eventType": "chat", "group_id": group,
        "payload": {"operation": "apply", "is_chatroom": False, "muc_id": f"a#b_{group}@c."},
        "from": "alice", "to": "bob", "timestamp": stamp, "seq": seq,
        "security": sign(call_id, SECRET, stamp),
    }  # fmt: skip
    return orjson.dumps(doc)


async def test_twenty_groups_stay_in_order_through_two_ingresses_and_a_killed_worker(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"test-ordered-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "SINK_AMQP_URL": amqp_url, "SINK_TOPOLOGY_PREFIX": prefix, "SINK_DEDUP_URL": redis_url,
        "SINK_SECRETS": SECRET, "SINK_PORT": str(port), "SINK_SPOOL_DIR": str(tmp_path / "spool"),
        "SINK_ORDERING": "group", "SINK_PARTITIONS": "16",
        "SINK_HANDLERS": "tests.ordered_recorder", "SINK_TEST_RECORD_DIR": str(tmp_path),
        "SINK_CLAIM_LEASE": "2",
    }  # fmt: skip
    ingress = SinkProcess("ingress", {**env, "SINK_INGRESS_PROCESSES": "2"})
    workers = [SinkProcess("worker", env) for _ in range(3)]
    await ingress.start("ingress.listening")
    await asyncio.gather(*(w.start("worker.started") for w in workers))
    accepted: dict[str, list[int]] = {f"g{i}": [] for i in range(GROUPS)}
    url = f"http://127.0.0.1:{port}/callbacks"
    started = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:

            async def send(group: str) -> None:
                for seq in range(PER_GROUP):
                    async with http.post(
                        url, data=body(group, seq), headers={"Content-Type": "application/json"}
                    ) as answer:
                        assert answer.status == 200
                        accepted[group].append(seq)

            async def kill_one() -> None:
                while sum(len(s) for s in accepted.values()) < GROUPS * PER_GROUP // 3:
                    await asyncio.sleep(0.05)
                await workers[0].stop(signal.SIGKILL)

            await asyncio.gather(*(send(g) for g in accepted), kill_one())
        async with asyncio.timeout(180):
            while sum(len(set(s)) for s in timelines(tmp_path).values()) < GROUPS * PER_GROUP:
                await asyncio.sleep(0.2)
    finally:
        for process in (*workers, ingress):
            await process.kill()
        connection = await aio_pika.connect(amqp_url)
        topology = Topology.of(Settings(topology_prefix=prefix, ordering="group"))
        await delete(await connection.channel(), topology, [])
        await connection.close()
    seen = timelines(tmp_path)
    repeats = 0
    for group, accepted_order in accepted.items():
        ran = seen[group]
        # A run the killed worker finished but had not yet marked done runs again at once on
        # its successor: an immediate repeat, counted, never a reordering.
        once = [seq for i, seq in enumerate(ran) if i == 0 or seq != ran[i - 1]]
        repeats += len(ran) - len(once)
        assert once == accepted_order, group
    took = time.monotonic() - started
    print(f"\nordered: {GROUPS * PER_GROUP} callbacks, {GROUPS} groups, 1 worker killed, "
          f"in order; immediate repeats after the kill: {repeats}; {took:.1f} s")  # fmt: skip
    assert repeats <= 3
