"""Property: whatever the emulator did and in whatever order (and however many times) its
callbacks are applied, the directory ends equal to the emulator's own state — on SQLite and
on PostgreSQL. This one feeds the directory directly; test_directory_e2e.py goes through
the ingress, RabbitMQ and a worker."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callback_sink.handlers.directory import DirectorySettings, Tracker
from callback_sink.handlers.directory.store import Directory
from callback_sink.sink.events import decode
from tests.directory_fixtures import (  # noqa: F401
    RunningEmulator,
    directory_url_fixture,
    emulator_fixture,
)
from tests.directory_workloads import (
    NO_SHRINK,
    TRICKY,
    assert_directory_equals_emulator,
    emit_shuffled,
    group_operations,
)


@pytest.fixture
async def tracker(directory_url: str, emulator: RunningEmulator) -> AsyncIterator[Tracker]:
    directory = await Directory.open(DirectorySettings(url=directory_url))
    tracker = Tracker(directory, emulator.client())
    yield tracker
    await tracker.close()


@example(operations=TRICKY, order=random.Random(0))
@settings(max_examples=40, deadline=None, derandomize=True, phases=NO_SHRINK,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(operations=group_operations, order=st.randoms(use_true_random=False))
async def test_the_directory_ends_equal_to_the_emulator_whatever_the_delivery_order(
    emulator: RunningEmulator,
    tracker: Tracker,
    operations: list[tuple[Any, ...]],
    order: random.Random,
) -> None:
    groups, deliveries = await emit_shuffled(emulator, operations, order)
    for doc in deliveries:
        await tracker.record(decode(orjson.dumps(doc)))
    await assert_directory_equals_emulator(tracker.directory, emulator.emulator, groups)
