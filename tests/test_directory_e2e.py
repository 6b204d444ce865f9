"""The whole system, end to end: random REST operations against the emulator; its signed
callbacks, some duplicated and all shuffled, POSTed to the real ingress, through the real
RabbitMQ, to a real worker running ``callback_sink.handlers.directory`` (whose REST lookups
go back to the emulator). The directory must end equal to the
emulator's state, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import callback_sink.handlers.directory as directory_module
from callback_sink.easemob.emulator.callbacks import CallbackSender
from callback_sink.easemob.models import NewGroup
from callback_sink.handlers.directory.view import MutedMember
from callback_sink.worker.consumer import Worker
from tests.conftest import SECRET
from tests.directory_fixtures import (  # noqa: F401
    Applied,
    RunningEmulator,
    directory_env_fixture,
    directory_url_fixture,
    emulator_fixture,
)
from tests.directory_workloads import (
    MUTE_MS,
    NO_SHRINK,
    TRICKY,
    assert_directory_equals_emulator,
    emit_shuffled,
    group_operations,
)


def sender_to(ingress: TestClient[Any, Any], emulator: RunningEmulator) -> CallbackSender:
    """A callback sender POSTing to the real ingress, as Easemob would."""
    return CallbackSender(
        appkey=emulator.emulator.settings.appkey,
        host="easemob-emulator",
        secret=SECRET,
        sink_url=str(ingress.make_url("/callbacks")),
    )


@pytest.fixture
async def pipeline(
    directory_env: None,
    ingress: TestClient[Any, Any],
    start_worker: Callable[..., Awaitable[Worker]],
    emulator: RunningEmulator,
) -> AsyncIterator[tuple[CallbackSender, Applied]]:
    """A worker running the directory handler; a sender posting to the real ingress."""
    applied = Applied()
    await start_worker(applied.handler())
    sender = sender_to(ingress, emulator)
    await sender.start()
    yield sender, applied
    await sender.stop()


@example(operations=TRICKY, order=random.Random(0))
@hypothesis_settings(max_examples=15, deadline=None, derandomize=True, phases=NO_SHRINK,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(operations=group_operations, order=st.randoms(use_true_random=False))
async def test_callbacks_through_ingress_broker_and_worker_rebuild_the_emulators_groups(
    emulator: RunningEmulator,
    pipeline: tuple[CallbackSender, Applied],
    operations: list[tuple[Any, ...]],
    order: random.Random,
) -> None:
    sender, applied = pipeline
    groups, deliveries = await emit_shuffled(emulator, operations, order)
    for doc in deliveries:
        assert await sender.deliver(orjson.dumps(doc)) == 200
    await applied.wait_for({doc["callId"] for doc in deliveries})
    directory = (await directory_module.tracker()).directory
    await assert_directory_equals_emulator(directory, emulator.emulator, groups)


#: A mute short enough to run out while the worker is down.
SHORT_MUTE_MS = 1_000


async def test_a_mute_that_ran_out_while_the_worker_was_down_is_not_in_the_directory(
    directory_env: None,
    ingress: TestClient[Any, Any],
    start_worker: Callable[..., Awaitable[Worker]],
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await client.create_group(
            NewGroup(name="g", owner="alice", members=("bob", "carol"))
        )
        await client.mute(group_id, ["bob"], SHORT_MUTE_MS)
        (carol,) = await client.mute(group_id, ["carol"], MUTE_MS)
    sender = sender_to(ingress, emulator)
    await sender.start()
    try:  # no worker yet: the callbacks wait in RabbitMQ
        for doc in emulator.emulator.callbacks.outbox:
            assert await sender.deliver(orjson.dumps(doc)) == 200
    finally:
        await sender.stop()
    emulator.advance(2 * SHORT_MUTE_MS / 1000)  # bob's mute runs out, without a callback
    group = emulator.emulator.state.groups[group_id]
    assert list(emulator.emulator.state.live_mutes(group)) == ["carol"]

    applied = Applied()
    await start_worker(applied.handler())  # the worker comes back to the backlog
    await applied.wait_for({doc["callId"] for doc in emulator.emulator.callbacks.outbox})

    directory = (await directory_module.tracker()).directory
    await assert_directory_equals_emulator(directory, emulator.emulator, [group_id])
    view = await directory.group(group_id)
    assert view is not None and view.mutes == (MutedMember("carol", carol.expire),)
