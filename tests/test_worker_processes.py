"""Real worker processes sharing Redis run each handler once per callback, whoever gets it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from callback_sink.sink.settings import Settings
from tests.conftest import callback, post, signed
from tests.processes import SinkProcess
from tests.recording import read_records
from tests.waiting import until

Client = TestClient[Any, Any]
COPIES = 5
CALLBACKS = 40


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Every copy reaches the queue: the ingress's own dedup of re-posts is off
    (``SINK_EDGE_DEDUP_SIZE=0``), so the workers' dedup is what is tested here. With it on,
    a copy posted after its first was confirmed is answered at the edge, never queued."""
    return replace(settings, edge_dedup_size=0)


def worker_env(settings: Settings, redis_url: str, record_dir: Path) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_DEDUP_URL": redis_url,
        "SINK_HANDLERS": "tests.recording",
        "SINK_RETRY_DELAYS": "0.2,0.4",
        "SINK_TEST_RECORD_DIR": str(record_dir),
    }


async def test_two_worker_processes_sharing_redis_run_each_handler_once(
    ingress: Client, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    env = worker_env(settings, redis_url, tmp_path)
    workers = [SinkProcess("worker", env), SinkProcess("worker", env)]
    try:
        await asyncio.gather(*(w.start("worker.started") for w in workers))
        bodies = [signed(callback()) for _ in range(CALLBACKS)]
        statuses = await asyncio.gather(
            *(post(ingress, body) for body in bodies for _ in range(COPIES))
        )
        assert statuses == [200] * (CALLBACKS * COPIES)

        # Every copy is accounted for: one "ok" and COPIES-1 "duplicate" per callback and handler.
        def outcomes(kind: str) -> int:
            return sum(
                line.get("outcome") == kind
                for w in workers
                for line in w.events("callback.handled")
            )

        await until(
            lambda: outcomes("ok") + outcomes("duplicate") >= CALLBACKS * COPIES * 2, 60,
            what="every copy accounted for",
        )  # fmt: skip
        assert outcomes("ok") == CALLBACKS * 2
        assert outcomes("duplicate") == CALLBACKS * (COPIES - 1) * 2
        assert all(w.events("callback.handled") for w in workers), "both workers took a share"

        counts = read_records(tmp_path)
        assert len(counts) == CALLBACKS * 2
        assert set(counts.values()) == {1}
    finally:
        for w in workers:
            await w.kill()
