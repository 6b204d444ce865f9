"""``SINK_DEDUP_URL=memory://`` keeps marks in one process: its worker consumes exclusively,
so a second worker on the same queues fails at start-up instead of running callbacks twice."""

from __future__ import annotations

import asyncio

from callback_sink.sink.settings import Settings
from tests.processes import SinkProcess

#: A refused second worker exits at once: its start-up is one connection and one refusal,
#: far inside the start-up timeout (SINK_STARTUP_TIMEOUT_S, 60 s) it never waits for.
REFUSAL_WITHIN_S = 30.0


def env(settings: Settings, dedup_url: str) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": dedup_url,
    }


async def refused(worker: SinkProcess) -> str:
    """The one error line of a worker that must not start, after its exit code 1."""
    assert worker.process is not None
    async with asyncio.timeout(REFUSAL_WITHIN_S):
        code = await worker.process.wait()
    await worker.stop()
    assert code == 1, worker.lines[-5:]
    text = [
        str(line.get("text") or line.get("error") or line.get("event")) for line in worker.lines
    ]
    errors = [line for line in text if "memory://" in line]
    assert len(errors) == 1, text  # one line says why
    assert not worker.events("worker.started"), text
    return "\n".join(text)


async def test_a_second_memory_worker_fails_at_start_up_with_one_line(
    settings: Settings, redis_url: str
) -> None:
    first = SinkProcess("worker", env(settings, "memory://"))
    second = SinkProcess("worker", env(settings, "memory://"))
    late_redis = SinkProcess("worker", env(settings, redis_url))
    try:
        await first.start("worker.started")
        [started] = first.events("worker.started")
        assert started["dedup"] == "memory" and started["exclusive"] is True

        second_start = asyncio.create_task(second.start("worker.started"))
        await asyncio.wait([second_start], timeout=REFUSAL_WITHIN_S)
        assert second_start.done() and isinstance(second_start.exception(), RuntimeError)
        said = await refused(second)
        assert "memory:// dedup allows one worker" in said
        assert "SINK_DEDUP_URL=redis://" in said

        # A Redis worker cannot join the memory worker's queues either.
        late_start = asyncio.create_task(late_redis.start("worker.started"))
        await asyncio.wait([late_start], timeout=REFUSAL_WITHIN_S)
        assert late_start.done() and isinstance(late_start.exception(), RuntimeError)
        assert "belongs to a worker with SINK_DEDUP_URL=memory://" in (await refused(late_redis))
        assert first.process is not None and first.process.returncode is None
    finally:
        for worker in (first, second, late_redis):
            if worker.process is not None:
                await worker.stop()


async def test_redis_workers_share_the_queues_and_say_which_store_they_use(
    settings: Settings, redis_url: str
) -> None:
    workers = [SinkProcess("worker", env(settings, redis_url)) for _ in range(2)]
    try:
        await asyncio.gather(*(w.start("worker.started") for w in workers))
        for worker in workers:
            [started] = worker.events("worker.started")
            assert started["dedup"] == "redis" and started["exclusive"] is False
    finally:
        for worker in workers:
            await worker.stop()
