"""The store's convergence rule, on SQLite and on PostgreSQL: the latest event wins."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callback_sink.handlers.directory import facts as f
from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.handlers.directory.store import Directory
from callback_sink.handlers.directory.view import MutedMember
from tests.directory_fixtures import directory_url_fixture, postgres_url_fixture  # noqa: F401


@pytest.fixture
async def directory(directory_url: str) -> AsyncIterator[Directory]:
    store = await Directory.open(DirectorySettings(url=directory_url))
    yield store
    await store.close()


async def test_an_older_event_never_overwrites_a_newer_one(directory: Directory) -> None:
    await directory.apply("g", [Fact(f.ADMIN, "bob")], timestamp=200, call_id="b")
    changed = await directory.apply(
        "g", [Fact(f.ADMIN, "bob", present=False)], timestamp=100, call_id="a"
    )
    view = await directory.group("g")
    assert changed == 0
    assert view is not None and view.admins == ("bob",)


async def test_a_removal_leaves_a_tombstone_that_a_late_addition_cannot_undo(
    directory: Directory,
) -> None:
    await directory.apply("g", f.left("bob"), timestamp=300, call_id="kick")
    await directory.apply("g", f.joined("bob"), timestamp=100, call_id="presence")
    view = await directory.group("g")
    assert view is not None and view.members == ()


async def test_a_timestamp_tie_is_broken_by_the_call_id_whatever_the_order(
    directory: Directory,
) -> None:
    first, second = [Fact(f.OWNER, value="alice")], [Fact(f.OWNER, value="bob")]
    await directory.apply("g1", first, timestamp=5, call_id="id-a")
    await directory.apply("g1", second, timestamp=5, call_id="id-b")
    await directory.apply("g2", second, timestamp=5, call_id="id-b")
    await directory.apply("g2", first, timestamp=5, call_id="id-a")
    one, two = await directory.group("g1"), await directory.group("g2")
    assert one is not None and two is not None
    assert one.owner == two.owner == "bob"


async def test_the_same_event_applied_twice_changes_nothing_the_second_time(
    directory: Directory,
) -> None:
    facts = [*f.became_owner("alice"), Fact(f.CHATROOM, present=False)]
    assert await directory.apply("g", facts, timestamp=1, call_id="c") == len(facts)
    assert await directory.apply("g", facts, timestamp=1, call_id="c") == 0


async def test_the_view_leaves_the_owner_out_of_members_and_keeps_mute_expiries(
    directory: Directory,
) -> None:
    await directory.apply("g", f.became_owner("alice"), timestamp=1, call_id="1")
    await directory.apply("g", f.joined("bob") + f.joined("carol"), timestamp=2, call_id="2")
    await directory.apply("g", [Fact(f.MUTE, "bob", value=99_000)], timestamp=3, call_id="3")
    await directory.apply("g", [Fact(f.MUTE, "carol")], timestamp=4, call_id="4")
    await directory.apply("g", f.fields({"name": "team", "maxusers": 20}), timestamp=5,
                          call_id="5")  # fmt: skip
    view = await directory.group("g")
    assert view is not None
    assert (view.owner, view.members) == ("alice", ("bob", "carol"))
    assert view.mutes == (MutedMember("bob", 99_000), MutedMember("carol", None))
    assert view.muted(now_ms=100_000) == (MutedMember("carol", None),)
    assert (view.name, view.maxusers, view.public) == ("team", 20, None)
    assert view.updated_at == 5


async def test_groups_lists_every_group_the_callbacks_mentioned(directory: Directory) -> None:
    for group_id in ("3", "1", "2"):
        await directory.apply(group_id, [Fact(f.DESTROYED)], timestamp=1, call_id=group_id)
    views = await directory.groups()
    assert [v.group_id for v in views] == ["1", "2", "3"]
    assert all(v.destroyed for v in views)
    assert await directory.group("unknown") is None


async def test_concurrent_writers_converge_on_the_latest_fact(directory: Directory) -> None:
    writes = [(ts, ts % 2 == 0) for ts in range(1, 41)]
    random.Random(4).shuffle(writes)
    await asyncio.gather(*(
        directory.apply("g", [Fact(f.MEMBER, user, present) for user in ("a", "b", "c")],
                        timestamp=ts, call_id=f"c{ts}")
        for ts, present in writes
    ))  # fmt: skip
    view = await directory.group("g")
    assert view is not None and view.members == ("a", "b", "c")  # ts 40 is even: present


async def test_two_workers_on_one_postgresql_database_converge(postgres_url: str) -> None:
    one = await Directory.open(DirectorySettings(url=postgres_url))
    two = await Directory.open(DirectorySettings(url=postgres_url))
    events = [(ts, [Fact(f.MEMBER, u, ts % 3 != 0) for u in ("a", "b")]) for ts in range(1, 61)]
    random.Random(9).shuffle(events)
    try:
        await asyncio.gather(*(
            (one if index % 2 else two).apply("g", facts, timestamp=ts, call_id=f"c{ts}")
            for index, (ts, facts) in enumerate(events + events[:20])
        ))  # fmt: skip
        seen_by_one, seen_by_two = await one.group("g"), await two.group("g")
    finally:
        await one.close()
        await two.close()
    assert seen_by_one == seen_by_two
    assert seen_by_one is not None and seen_by_one.members == ()  # ts 60: 60 % 3 == 0


_fact = st.builds(
    Fact,
    kind=st.sampled_from([f.MEMBER, f.ADMIN, f.MUTE, f.OWNER]),
    subject=st.sampled_from(["", "u1", "u2"]),
    present=st.booleans(),
    value=st.one_of(st.none(), st.integers(0, 3)),
)
_event = st.tuples(st.integers(0, 6), st.sampled_from("abc"), st.lists(_fact, max_size=4))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    events=st.lists(_event, max_size=12, unique_by=lambda e: (e[0], e[1])),
    order=st.randoms(use_true_random=False),
)
async def test_any_order_and_any_repetition_gives_the_same_rows(
    directory: Directory, events: list[tuple[int, str, list[Fact]]], order: random.Random
) -> None:
    in_order, shuffled = f"g-{uuid.uuid4().hex}", f"g-{uuid.uuid4().hex}"
    for ts, call_id, facts in sorted(events, key=lambda e: (e[0], e[1])):
        await directory.apply(in_order, facts, timestamp=ts, call_id=call_id)
    replay = events + [e for e in events if order.random() < 0.3]
    order.shuffle(replay)
    for ts, call_id, facts in replay:
        await directory.apply(shuffled, facts, timestamp=ts, call_id=call_id)
    one, two = await directory.group(in_order), await directory.group(shuffled)
    if one is None or two is None:
        assert one is two is None
        return
    assert {**one.as_dict(), "group_id": ""} == {**two.as_dict(), "group_id": ""}
