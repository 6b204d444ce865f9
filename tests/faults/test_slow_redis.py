"""A slow Redis: 1-2 s added each way between two workers and Redis, every callback posted
twice. A lease may lapse while its renewal is in flight; a worker must then not run (or
mark done) a handler it cannot prove it still holds, and must say so in its log."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import Sink, expected_pairs, stream_bodies
from tests.faults.latency import LatencyProxy
from tests.recording import read_records
from tests.waiting import until

pytestmark = pytest.mark.faults

CALLBACKS = 20
#: SINK_CLAIM_LEASE: the added round trip (2-4 s) is up to a third of it.
LEASE = "12"


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[LatencyProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with LatencyProxy(port, 1.0, 2.0) as proxy:
        yield proxy


@pytest.fixture
async def sink(
    tmp_path: Path, amqp_url: str, redis_url: str, proxy: LatencyProxy
) -> AsyncIterator[Sink]:
    # Every re-post reaches a worker (no edge dedup); the workers go through the proxy.
    sink = Sink(tmp_path, amqp_url, redis_url, SINK_EDGE_DEDUP_SIZE="0", SINK_LOG_ACCEPTED="true")
    slow = f"redis://127.0.0.1:{proxy.port}/0"
    await sink.start_ingress()
    await asyncio.gather(*(sink.start_worker(SINK_DEDUP_URL=slow, SINK_CLAIM_LEASE=LEASE)
                           for _ in range(2)))  # fmt: skip
    yield sink
    await sink.close()


async def post_twice(url: str, bodies: list[tuple[str, bytes, str]]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(body: bytes) -> int:
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                return response.status

        statuses = await asyncio.gather(*(post(body) for _, body, _ in bodies for _ in range(2)))
    assert set(statuses) == {200}, Counter(statuses)


def worker_lines(sink: Sink, event: str) -> list[dict[str, object]]:
    return [line for w in sink.workers for line in w.events(event)]


async def test_a_slow_redis_runs_no_handler_twice_and_logs_every_lost_lease(sink: Sink) -> None:
    bodies = stream_bodies(CALLBACKS, "slow")
    expected = expected_pairs([(key, name) for key, _, name in bodies])
    await post_twice(sink.url, bodies)

    def settled() -> bool:
        # Each copy of each (handler, callback) ends as ok, duplicate or a lost lease.
        final = [line for line in worker_lines(sink, "callback.handled")
                 if line.get("outcome") in ("ok", "duplicate")]  # fmt: skip
        return len(final) + len(worker_lines(sink, "dedup.lease_lost")) >= 2 * len(expected)

    await until(settled, within=240, what="every copy of every callback settled")
    await until(lambda: expected <= set(read_records(sink.records)), within=60, what="all ran")
    counts = read_records(sink.records)
    twice = {pair: n for pair, n in counts.items() if n > 1}
    lost = worker_lines(sink, "dedup.lease_lost")
    late = worker_lines(sink, "dedup.renew_late")
    print(f"\nSLOW REDIS ran_twice={len(twice)} lease_lost={len(lost)} renew_late={len(late)}")
    assert twice == {}
    assert all(line["level"] == "error" and line["call_id"] and line["handler"] for line in lost)
    assert all(line["level"] == "warning" for line in late)
