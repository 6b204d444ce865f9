"""Random REST workloads for the directory tests: ``group_operations`` draws one,
``run_operations`` plays it against the emulator, ``emit_shuffled`` returns the callbacks it
caused (some duplicated, all shuffled) and ``expected_view`` tells what the directory must
end up saying about each group."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import Phase
from hypothesis import strategies as st

from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.emulator.state import Group
from callback_sink.easemob.models import NewGroup
from callback_sink.easemob.rest import GroupClient
from callback_sink.handlers.directory.store import Directory
from callback_sink.handlers.directory.view import GroupView, MutedMember
from callback_sink.sink.errors import EasemobError
from tests.directory_fixtures import RunningEmulator

USERS = tuple(f"u{i}" for i in range(5))
#: Long enough that no mute expires during a test.
MUTE_MS = 3_600_000

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
    live_mutes = emulator.state.live_mutes(group)  # Easemob lifts expired mutes silently
    return {
        "destroyed": False,
        "is_chatroom": False,
        "owner": group.owner,
        "members": tuple(sorted(group.members)),
        "admins": tuple(sorted(group.admins)),
        "mutes": tuple(MutedMember(*mute) for mute in sorted(live_mutes.items())),
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


async def assert_directory_equals_emulator(
    directory: Directory, emulator: Emulator, groups: list[str]
) -> None:
    for index, group_id in enumerate(groups):
        expected = expected_view(emulator, group_id)
        observed = observed_view(await directory.group(group_id), expected)
        assert observed == expected, f"group #{index}"
