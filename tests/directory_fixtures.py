"""Fixtures and helpers for the REST client, emulator and directory tests.

Test modules import the fixtures they use (``emulator_fixture`` …); each is registered
under its short name. ``emulator`` is an in-process emulator on a free port, with a clock a
test can move forward, and a client configured for it; ``directory_url`` is an SQLite file
or a fresh PostgreSQL database per test (a missing PostgreSQL skips locally and fails under
CI=true); ``directory_env`` configures ``callback_sink.handlers.directory`` from the
environment, and
:class:`Applied` tells which callbacks a worker's directory handler has applied. Random
workloads live in tests/directory_workloads.py.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

import callback_sink.handlers.directory as directory_module
from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.rest import GroupClient
from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.handlers.registry import Handler, collect
from callback_sink.sink.events import Event
from tests.conftest import SECRET
from tests.needs import missing

POSTGRES_URL = os.environ.get(
    "SINK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
#: How long a worker may take to apply one workload's callbacks, seconds.
SETTLE_TIMEOUT = 60.0


def _unavailable(what: str, exc: BaseException) -> None:
    missing(f"{what} is not reachable: {exc}")


@dataclass
class RunningEmulator:
    emulator: Emulator
    server: TestServer
    #: Client settings pointing at this emulator, with fast back-off for tests.
    client_settings: EasemobSettings

    def client(self, **options: Any) -> GroupClient:
        return GroupClient(self.client_settings, **options)

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock forward (its mutes and tokens run out sooner)."""
        clock = self.emulator.clock
        assert isinstance(clock, Clock), "the emulator fixture's clock can be moved"
        clock.offset += seconds


def client_settings_for(server: TestServer, settings: EmulatorSettings) -> EasemobSettings:
    return EasemobSettings(
        host=str(server.make_url("")).rstrip("/"),
        org=settings.org,
        app=settings.app,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        rate_limit=1000.0,
        backoff_base=0.01,
        backoff_max=0.05,
    )


class Clock:
    """The emulator's clock, to be moved forward: a mute can run out within a test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(name="emulator")
async def emulator_fixture() -> AsyncIterator[RunningEmulator]:
    """An emulator that keeps its callbacks in memory (``emulator.callbacks.outbox``); its
    clock is a :class:`Clock` (``emulator.emulator.clock.offset += …``)."""
    settings = EmulatorSettings(sink_url="", seed=7)
    emu = Emulator(settings, callback_secret=SECRET, clock=Clock())
    server = TestServer(emu.app())
    await server.start_server()
    yield RunningEmulator(emu, server, client_settings_for(server, settings))
    await server.close()


@pytest.fixture(name="directory_env")
async def directory_env_fixture(
    directory_url: str, emulator: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    """``callback_sink.handlers.directory`` configured from the environment, as in
    production, its REST look-ups going to ``emulator``; closed after the workers that use it
    have stopped (fixtures tear down in reverse order)."""
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


class Applied:
    """The directory handler, wrapped only to tell a test which callbacks it has applied."""

    def __init__(self) -> None:
        (self._handler,) = collect(directory_module)
        self.call_ids: set[str] = set()
        self._changed = asyncio.Condition()

    def handler(self) -> Handler:
        async def track(event: Event) -> None:
            await self._handler.func(event)
            async with self._changed:
                self.call_ids.add(event.call_id)
                self._changed.notify_all()

        return Handler(self._handler.name, track, self._handler.subscriptions)

    async def wait_for(self, call_ids: set[str], within: float = SETTLE_TIMEOUT) -> None:
        async def all_applied() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: call_ids <= self.call_ids)

        await asyncio.wait_for(all_applied(), within)


async def _admin(statement: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database."""
    connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new PostgreSQL database, dropped on exit (a missing PostgreSQL skips
    the test locally and fails it under CI=true)."""
    name = f"sink_directory_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(_admin(f'CREATE DATABASE "{name}"'), 10)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="postgres_url")
async def postgres_url_fixture() -> AsyncIterator[str]:
    """A PostgreSQL database of its own for one test, dropped afterwards."""
    async with fresh_database() as url:
        yield url


@pytest.fixture(name="directory_url", params=["sqlite", "postgresql"])
async def directory_url_fixture(
    request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[str]:
    """The directory's URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/directory.sqlite3"
        return
    async with fresh_database() as url:
        yield url
