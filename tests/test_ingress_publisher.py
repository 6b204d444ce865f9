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
from tests.needs import missing
from tests.waiting import until


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


async def _policy_of(queue: str) -> str:
    """The policy RabbitMQ applies to ``queue`` now ("" for none)."""
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name", "policy",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    for line in out.decode().splitlines():
        name, _, policy = line.partition("\t")
        if name == queue:
            return policy.strip()
    return ""


@pytest.fixture
async def full_work_queue(settings: Settings) -> AsyncIterator[str]:
    """A policy that makes the work queue refuse (nack) every publish, removed after."""
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl is not installed (it comes with rabbitmq-server)")
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
    # Policies apply asynchronously: wait until the queue has it, not for a guessed second.
    await until(lambda: _policy_of(work), 30, what=f"the policy on {work}", interval=0.2)
    publisher = ingress.app[PUBLISHER]
    with capture_logs() as logs:
        for _ in range(3):
            assert await post(ingress, signed(callback())) == 200  # spooled
        assert publisher.state == "reopening" and not publisher.ready
        assert (await (await ingress.get("/readyz")).json())["broker"] is False
        await _rabbitmqctl("clear_policy", full_work_queue)

        async def drained() -> bool:
            return await queue_depth(settings.amqp_url, work) >= 3

        await until(drained, 60, what="the spool drained into the work queue", interval=0.2)
    assert ingress.app[SPOOL].records == 0
    assert publisher.ready
    events = [line["event"] for line in logs]
    assert "ingress.channel_nacking" in events and "ingress.channel_reopened" in events
