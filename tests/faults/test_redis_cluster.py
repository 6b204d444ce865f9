"""The dedup store is a Redis Cluster: a stream is handled exactly once, and when one primary
dies mid-stream nothing is lost and the repeats are counted.

Six ``redis-server`` processes of the test's own (three primaries, three replicas,
``cluster-node-timeout`` 1000 ms) made a cluster with ``redis-cli --cluster create``; an
ingress and two workers with ``SINK_DEDUP_URL=redis+cluster://…`` and ``SINK_DEDUP_WAIT=1``.
A first stream runs with no fault: every callback handled once per handler. A second stream
loses one primary (the one serving the slot of a probe key) at 30 %; its replica takes over.
After each stream every callback is posted again (as Easemob re-sends one): it must meet its
done marks. Each prints a ``REDIS HA FIGURES`` line: lost, run twice (``extra_runs``;
``twice_on_resend`` of them on the re-send), the longest pause of handling.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callback_sink.worker.redis_keys import Keys
from tests.faults.harness import Figures, Sink, have, stream_bodies
from tests.faults.redis_ha import RedisClusterGroup, stream_with_a_kill
from tests.needs import missing
from tests.waiting import until

pytestmark = pytest.mark.faults

CALLBACKS = 300
RATE = 30.0


@pytest.fixture
async def group() -> AsyncIterator[RedisClusterGroup]:
    if not have("redis-server") or not have("redis-cli"):
        missing("redis-server and redis-cli are not installed")
    async with RedisClusterGroup() as group:
        yield group


async def test_a_cluster_handles_a_stream_once_and_survives_losing_a_primary(
    tmp_path: Path, amqp_url: str, group: RedisClusterGroup
) -> None:
    # SINK_DEDUP_WAIT=1: each batch of done marks WAITs on every primary it wrote to.
    sink = Sink(tmp_path, amqp_url, group.url, SINK_EDGE_DEDUP_SIZE="0", SINK_DEDUP_WAIT="1")
    try:
        await sink.start_ingress()
        for _ in range(2):
            await sink.start_worker()
        pids = [w.process.pid for w in sink.workers if w.process is not None]

        calm = Figures("redis-cluster-no-fault")
        await stream_with_a_kill(sink, stream_bodies(CALLBACKS, f"calm-{sink.prefix}"), RATE,
                                 None, calm)  # fmt: skip
        print(f"\nCLUSTER calm: lost={calm.lost} twice={calm.extra_runs}")
        assert (calm.lost, calm.extra_runs, calm.refused) == (0, 0, 0)

        calm_records = sink.records / "calm"  # the second stream is counted on its own
        calm_records.mkdir()
        for ledger in sink.records.glob("*.log"):
            ledger.rename(calm_records / ledger.name)
        bodies = stream_bodies(CALLBACKS, f"kill-{sink.prefix}")
        probe = Keys(sink.prefix, cluster=True).of("probe", "victim")
        victim = await group.primary_of(probe)
        took: list[float] = []

        async def kill_a_primary() -> None:
            killed = time.monotonic()
            await group.kill(victim)
            await until(lambda: group.moved(probe, victim), within=60,
                        what="a replica took over the killed primary's slots")  # fmt: skip
            took.append(round(time.monotonic() - killed, 2))

        killed = Figures("redis-cluster-primary-killed")
        await stream_with_a_kill(sink, bodies, RATE, kill_a_primary, killed)
        killed.notes["failover_s"] = took[0]
        pause = killed.notes["longest_pause_s"]
        print(f"\nCLUSTER primary killed: lost={killed.lost} twice={killed.extra_runs} "
              f"longest_pause_s={pause} failover_s={took[0]} "
              f"of_which_on_resend={killed.notes['twice_on_resend']}")  # fmt: skip
        assert killed.lost == 0 and killed.refused == 0
        alive = [w.process.pid for w in sink.workers
                 if w.process is not None and w.process.returncode is None]  # fmt: skip
        assert alive == pids, "a worker exited: it should have followed the new primary"
    finally:
        await sink.close()
