"""The whole system, end to end: random REST operations against the emulator; its signed
callbacks, some duplicated and all shuffled, POSTed to the real ingress, through the real
RabbitMQ, to a real worker running ``handlers.directory`` (whose REST lookups go back to the
emulator). The directory must end equal to the emulator's state, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import handlers.directory as directory_module
from easemob.emulator.callbacks import CallbackSender
from handlers.registry import Handler, collect
from sink.events import Event
from tests.conftest import SECRET
from tests.directory_fixtures import (  # noqa: F401
    NO_SHRINK,
    TRICKY,
    RunningEmulator,
    directory_url_fixture,
    emit_shuffled,
    emulator_fixture,
    expected_view,
    group_operations,
    observed_view,
)
from worker.consumer import Worker

#: How long the worker may take to apply one example's callbacks.
SETTLE_TIMEOUT = 60.0


@dataclass
class Pipeline:
    sender: CallbackSender
    applied: set[str]
    changed: asyncio.Condition

    async def wait_for(self, call_ids: set[str]) -> None:
        async def all_applied() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: call_ids <= self.applied)

        await asyncio.wait_for(all_applied(), SETTLE_TIMEOUT)


@pytest.fixture
async def directory_env(
    directory_url: str, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """``handlers.directory`` configured from the environment, as in production; closed
    after the workers that use it have stopped (fixtures tear down in reverse order)."""
    rest = emulator.client_settings
    for name, value in {
        "SINK_DIRECTORY_URL": directory_url,
        "SINK_EASEMOB_HOST": rest.host,
        "SINK_EASEMOB_ORG": rest.org,
        "SINK_EASEMOB_APP": rest.app,
        "SINK_EASEMOB_CLIENT_ID": rest.client_id,
        "SINK_EASEMOB_CLIENT_SECRET": rest.client_secret,
        "SINK_EASEMOB_BACKOFF_BASE": "0.01",
        "SINK_EASEMOB_BACKOFF_MAX": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    yield
    await directory_module.close()


@pytest.fixture
async def pipeline(
    directory_env: None,
    ingress: TestClient[Any, Any],
    start_worker: Callable[..., Awaitable[Worker]],
    emulator: RunningEmulator,
) -> AsyncIterator[Pipeline]:
    """A worker running the directory handler, wrapped only to tell the test which
    callbacks it has applied; a sender posting callbacks to the real ingress."""
    (handler,) = collect(directory_module)
    applied: set[str] = set()
    changed = asyncio.Condition()

    async def track(event: Event) -> None:
        await handler.func(event)
        async with changed:
            applied.add(event.call_id)
            changed.notify_all()

    await start_worker(Handler(handler.name, track, handler.subscriptions))
    sender = CallbackSender(
        appkey=emulator.emulator.settings.appkey,
        host="easemob-emulator",
        secret=SECRET,
        sink_url=str(ingress.make_url("/callbacks")),
    )
    await sender.start()
    yield Pipeline(sender, applied, changed)
    await sender.stop()


@example(operations=TRICKY, order=random.Random(0))
@hypothesis_settings(max_examples=15, deadline=None, derandomize=True, phases=NO_SHRINK,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(operations=group_operations, order=st.randoms(use_true_random=False))
async def test_callbacks_through_ingress_broker_and_worker_rebuild_the_emulators_groups(
    emulator: RunningEmulator,
    pipeline: Pipeline,
    operations: list[tuple[Any, ...]],
    order: random.Random,
) -> None:
    groups, deliveries = await emit_shuffled(emulator, operations, order)
    for doc in deliveries:
        assert await pipeline.sender.deliver(orjson.dumps(doc)) == 200
    await pipeline.wait_for({doc["callId"] for doc in deliveries})
    directory = (await directory_module.tracker()).directory
    for index, group_id in enumerate(groups):
        expected = expected_view(emulator.emulator, group_id)
        observed = observed_view(await directory.group(group_id), expected)
        assert observed == expected, f"group #{index}"
