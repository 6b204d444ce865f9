"""Fixtures and helpers for the REST client, emulator and directory tests.

Test modules import the fixtures they use (``emulator_fixture`` …); each is registered
under its short name. ``emulator`` is an in-process emulator on a free port with a client
configured for it; ``directory_url`` is an SQLite file or a fresh
PostgreSQL database per test (a missing PostgreSQL skips locally and fails under CI=true).
``group_operations`` draws random REST workloads; ``run_operations`` plays one against the
emulator and ``expected_view`` tells what the directory must end up saying.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import Phase
from hypothesis import strategies as st

from easemob.emulator import Emulator
from easemob.emulator.state import Group
from easemob.models import NewGroup
from easemob.rest import GroupClient
from easemob.settings import EasemobSettings, EmulatorSettings
from handlers.directory.view import GroupView, MutedMember
from sink.errors import EasemobError
from tests.conftest import SECRET

POSTGRES_URL = os.environ.get(
    "SINK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
USERS = tuple(f"u{i}" for i in range(5))
#: Long enough that no mute expires during a test.
MUTE_MS = 3_600_000


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing service fails the run)")
    pytest.skip(message)


@dataclass
class RunningEmulator:
    emulator: Emulator
    server: TestServer
    #: Client settings pointing at this emulator, with fast back-off for tests.
    client_settings: EasemobSettings

    def client(self, **options: Any) -> GroupClient:
        return GroupClient(self.client_settings, **options)


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


@pytest.fixture(name="emulator")
async def emulator_fixture() -> AsyncIterator[RunningEmulator]:
    """An emulator that keeps its callbacks in memory (``emulator.callbacks.outbox``)."""
    settings = EmulatorSettings(sink_url="", seed=7)
    emu = Emulator(settings, callback_secret=SECRET)
    server = TestServer(emu.app())
    await server.start_server()
    yield RunningEmulator(emu, server, client_settings_for(server, settings))
    await server.close()


async def _admin(statement: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database."""
    connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _create_database(name: str) -> None:
    await _admin(f'CREATE DATABASE "{name}"')


async def _drop_database(name: str) -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(name="postgres_url")
async def postgres_url_fixture() -> AsyncIterator[str]:
    """A PostgreSQL database of its own for one test, dropped afterwards."""
    name = f"sink_directory_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(_create_database(name), 10)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    await _drop_database(name)


@pytest.fixture(name="directory_url", params=["sqlite", "postgresql"])
async def directory_url_fixture(
    request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[str]:
    """The directory's URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/directory.sqlite3"
        return
    name = f"sink_directory_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(_create_database(name), 10)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    await _drop_database(name)


# --- random REST workloads ---------------------------------------------------------------

_user = st.sampled_from(USERS)
_users = st.lists(_user, min_size=1, max_size=3, unique=True)
_group = st.integers(min_value=0, max_value=2)

_operation = st.one_of(
    st.tuples(st.just("create"), _user, st.lists(_user, max_size=3, unique=True)),
    st.tuples(st.just("add"), _group, _user),
    st.tuples(st.just("add_many"), _group, _users),
    st.tuples(st.just("remove"), _group, _user),
    st.tuples(st.just("remove_many"), _group, _users),
    st.tuples(st.just("admin"), _group, _user),
    st.tuples(st.just("unadmin"), _group, _user),
    st.tuples(st.just("transfer"), _group, _user),
    st.tuples(st.just("block"), _group, _user),
    st.tuples(st.just("block_many"), _group, _users),
    st.tuples(st.just("unblock"), _group, _user),
    st.tuples(st.just("unblock_many"), _group, _users),
    st.tuples(st.just("mute"), _group, _users),
    st.tuples(st.just("unmute"), _group, _users),
    st.tuples(st.just("update"), _group, st.integers(min_value=0, max_value=99)),
    st.tuples(st.just("destroy"), _group),
)

#: A workload: a first group, then 12 to 40 random operations (long enough that one
#: user goes through several roles).
group_operations = st.lists(_operation, min_size=12, max_size=40).map(
    lambda ops: [("create", "u0", ["u1", "u2", "u3", "u4"]), *ops]
)


#: A workload that walks one user through every rule that ties facts together: an admin
#: and muted member removed then re-added, a transfer to an admin, a block of a muted member,
#: a block refused for the owner, a destroyed second group. Every property test runs it.
TRICKY: list[tuple[Any, ...]] = [
    ("create", "u0", ["u1", "u2", "u3", "u4"]),
    ("admin", 0, "u1"),
    ("mute", 0, ["u1", "u2"]),
    ("remove", 0, "u1"),
    ("add", 0, "u1"),
    ("admin", 0, "u2"),
    ("transfer", 0, "u2"),
    ("block", 0, "u3"),
    ("unblock", 0, "u3"),
    ("add", 0, "u3"),
    ("mute", 0, ["u4"]),
    ("block_many", 0, ["u4", "u2"]),
    ("update", 0, 7),
    ("create", "u1", ["u2"]),
    ("destroy", 1),
    ("remove_many", 0, ["u0", "u3"]),
    ("admin", 0, "u1"),
    ("unmute", 0, ["u1"]),
]


#: Shrinking replays the whole pipeline hundreds of times; the failing example is printed
#: as found instead.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
#: Share of callbacks delivered twice in the property tests.
DUPLICATE_SHARE = 0.25


async def emit_shuffled(
    emulator: RunningEmulator, operations: list[tuple[Any, ...]], order: random.Random
) -> tuple[list[str], list[dict[str, Any]]]:
    """Run ``operations`` against the emulator; return the groups made and the callbacks it
    emitted, a quarter of them duplicated, all in a shuffled order."""
    outbox = emulator.emulator.callbacks.outbox
    start = len(outbox)
    async with emulator.client() as client:
        groups = await run_operations(client, operations)
    emitted = outbox[start:]
    deliveries = emitted + [doc for doc in emitted if order.random() < DUPLICATE_SHARE]
    order.shuffle(deliveries)
    return groups, deliveries


async def run_operations(client: GroupClient, operations: list[tuple[Any, ...]]) -> list[str]:
    """Play a workload; refused calls (4xx) are part of the game. The created group ids."""
    groups: list[str] = []
    for op in operations:
        name, args = op[0], op[1:]
        if name != "create" and not groups:
            continue
        group = groups[args[0] % len(groups)] if name != "create" else ""
        try:
            if name == "create":
                owner, members = args
                new = NewGroup(name=f"g{len(groups)}", owner=owner, description="d",
                               members=tuple(m for m in members if m != owner))  # fmt: skip
                groups.append(await client.create_group(new))
            elif name == "update":
                await client.update_group(group, name=f"n{args[1]}", maxusers=10 + args[1])
            elif name == "destroy":
                await client.delete_group(group)
            else:
                await _member_operation(client, name, group, args[1])
        except EasemobError as exc:
            assert 400 <= exc.status < 500, exc
    return groups


async def _member_operation(client: GroupClient, name: str, group: str, users: Any) -> None:
    calls = {
        "add": client.add_member,
        "remove": client.remove_member,
        "transfer": client.transfer_owner,
        "admin": client.add_admin,
        "unadmin": client.remove_admin,
        "block": client.block,
        "unblock": client.unblock,
        "add_many": client.add_members,
        "remove_many": client.remove_members,
        "block_many": client.block_many,
        "unblock_many": client.unblock_many,
        "unmute": client.unmute,
    }
    if name == "mute":
        await client.mute(group, users, MUTE_MS)
    else:
        await calls[name](group, users)


def expected_view(emulator: Emulator, group_id: str) -> dict[str, Any]:
    """What the directory must say about a group, from the emulator's own state."""
    if group_id in emulator.state.destroyed:
        return {"destroyed": True}
    group: Group = emulator.state.groups[group_id]
    return {
        "destroyed": False,
        "is_chatroom": False,
        "owner": group.owner,
        "members": tuple(sorted(group.members)),
        "admins": tuple(sorted(group.admins)),
        "mutes": tuple(MutedMember(u, group.mutes[u]) for u in sorted(group.mutes)),
        "blocked": tuple(sorted(group.blocks)),
        "allowed": (),
        "muted_all": False,
        "name": group.name,
        "description": group.description,
        "public": group.public,
        "membersonly": group.membersonly,
        "allowinvites": group.allowinvites,
        "maxusers": group.maxusers,
    }


def observed_view(view: GroupView | None, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The same fields, read from the directory's view."""
    if view is None:
        return None
    return {key: getattr(view, key) for key in expected}
