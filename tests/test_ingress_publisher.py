"""A publisher whose channel keeps nacking is not ready, reopens its channel, and drains the
spool once the broker accepts again (a max-length policy set, then removed)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callback_sink.ingress.app import PUBLISHER, SPOOL
from callback_sink.sink.settings import Settings
from tests.broker import queue_depth
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


async def _rabbitmqctl(*args: str, check: bool = True) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    code = await asyncio.wait_for(process.wait(), 60)
    assert code == 0 or not check


@pytest.fixture
async def full_work_queue(settings: Settings) -> AsyncIterator[str]:
    """A policy that makes the work queue refuse (nack) every publish, removed after."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    name = f"{settings.topology_prefix}-full"
    yield name
    await _rabbitmqctl("clear_policy", name, check=False)  # already cleared by a passing test


async def test_a_nacking_channel_is_reopened_not_ready_meanwhile_and_the_spool_drains(
    serve: Serve, settings: Settings, full_work_queue: str
) -> None:
    ingress = await serve()
    work = f"{settings.topology_prefix}.work"
    definition = '{"max-length": 0, "overflow": "reject-publish"}'
    await _rabbitmqctl("set_policy", "--apply-to", "queues", full_work_queue, f"^{work}$",
                       definition)  # fmt: skip
    await asyncio.sleep(1)  # policies apply asynchronously
    publisher = ingress.app[PUBLISHER]
    with capture_logs() as logs:
        for _ in range(3):
            assert await post(ingress, signed(callback())) == 200  # spooled
        assert publisher.state == "reopening" and not publisher.ready
        assert (await (await ingress.get("/readyz")).json())["broker"] is False
        await _rabbitmqctl("clear_policy", full_work_queue)
        async with asyncio.timeout(60):
            while await queue_depth(settings.amqp_url, work) < 3:
                await asyncio.sleep(0.2)
    assert ingress.app[SPOOL].records == 0
    assert publisher.ready
    events = [line["event"] for line in logs]
    assert "ingress.channel_nacking" in events and "ingress.channel_reopened" in events
