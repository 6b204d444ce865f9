"""The dedup store's primary dies mid-stream behind Redis Sentinel: nothing is lost, the
workers follow the new primary without a restart, and the repeats are counted.

Three ``redis-server`` processes (a primary and two replicas) and three sentinels
(``down-after-milliseconds`` 1000) of the test's own, an ingress and two workers with
``SINK_DEDUP_URL=redis+sentinel://…``, a paced stream of callbacks; at 30 % of it the primary
is SIGKILLed; once all is handled, every callback is posted again (as Easemob re-sends one),
so that a done mark the failover lost shows as a second run. Run once without and once with
``SINK_DEDUP_WAIT=1``; each prints a ``REDIS HA FIGURES`` line: lost, run twice
(``extra_runs``; ``twice_on_resend`` of them on the re-send), the longest pause of handling
after the kill and how long the sentinels took to name a new primary.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import Figures, Sink, have, stream_bodies
from tests.faults.redis_ha import SentinelGroup, stream_with_a_kill
from tests.needs import missing
from tests.waiting import until

pytestmark = pytest.mark.faults

CALLBACKS = 400
#: Callbacks per second: the stream lasts ~13 s, the failover ~2-5 s of it.
RATE = 30.0


@pytest.fixture
async def group() -> AsyncIterator[SentinelGroup]:
    if not have("redis-server"):
        missing("redis-server is not installed")
    async with SentinelGroup() as group:
        yield group


@pytest.mark.parametrize("wait", ["0", "1"])
async def test_killing_the_primary_mid_stream_loses_nothing_and_no_worker_restarts(
    tmp_path: Path, amqp_url: str, group: SentinelGroup, wait: str
) -> None:
    sink = Sink(tmp_path, amqp_url, group.url, SINK_DEDUP_WAIT=wait, SINK_EDGE_DEDUP_SIZE="0")
    figures = Figures(f"redis-sentinel-primary-killed-wait-{wait}")
    try:
        await sink.start_ingress()
        for _ in range(2):
            await sink.start_worker()
        pids = [w.process.pid for w in sink.workers if w.process is not None]
        old = await group.primary()
        failed_over: list[float] = []

        async def kill_primary() -> None:
            killed = time.monotonic()
            await group.kill(old)
            await until(lambda: _moved(group, old), within=60, what="a new primary")
            failed_over.append(round(time.monotonic() - killed, 2))

        bodies = stream_bodies(CALLBACKS, f"sentinel-{wait}-{sink.prefix}")
        await stream_with_a_kill(sink, bodies, RATE, kill_primary, figures)
        figures.notes["failover_s"] = failed_over[0]
        notes = figures.notes
        print(f"\nSENTINEL wait={wait}: lost={figures.lost} twice={figures.extra_runs} "
              f"longest_pause_s={notes['longest_pause_s']} failover_s={failed_over[0]} "
              f"unavailable={notes['dedup.unavailable']} "
              f"of_which_on_resend={notes['twice_on_resend']}")  # fmt: skip
        assert figures.lost == 0 and figures.refused == 0
        alive = [w.process.pid for w in sink.workers
                 if w.process is not None and w.process.returncode is None]  # fmt: skip
        assert alive == pids, "a worker exited: it should have followed the new primary"
    finally:
        await sink.close()


async def _moved(group: SentinelGroup, old: int) -> bool:
    return await group.primary() != old
