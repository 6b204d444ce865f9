"""The REST client against the emulator: every endpoint, tokens, retries, errors."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from callback_sink.easemob.api import MAX_BATCH
from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.models import Member, NewGroup, UserResult
from callback_sink.easemob.rest import GroupClient
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.sink.errors import BatchTooLarge, EasemobError, EasemobThrottled
from tests.directory_fixtures import (  # noqa: F401
    RunningEmulator,
    client_settings_for,
    emulator_fixture,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def new_group(client: GroupClient, members: tuple[str, ...] = ("bob", "carol")) -> str:
    return await client.create_group(
        NewGroup(name="team", owner="alice", description="ops", maxusers=50, members=members)
    )


async def test_a_created_group_reads_back_with_the_fields_it_was_created_with(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await client.create_group(
            NewGroup(
                name="team",
                owner="alice",
                description="ops",
                public=False,
                maxusers=50,
                membersonly=True,
                allowinvites=True,
                members=("bob",),
            )
        )
        details = await client.group(group_id)
    assert (details.group_id, details.name, details.description) == (group_id, "team", "ops")
    assert (details.public, details.membersonly, details.allowinvites) == (False, True, True)
    assert (details.maxusers, details.owner, details.members) == (50, "alice", ("bob",))
    assert details.affiliations_count == 2


async def test_details_of_several_groups_name_the_ones_that_do_not_exist(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        first, second = await new_group(client), await new_group(client)
        batch = await client.groups(first, "404404404", second)
    assert [g.group_id for g in batch.found] == [first, second]
    assert batch.missing == ("404404404",)


async def test_listing_groups_follows_the_cursor_over_every_page(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        created = [await new_group(client) for _ in range(5)]
        first_page = await client.list_groups(limit=2)
        every = [g async for g in client.iter_groups(page_size=2)]
    assert len(first_page.groups) == 2 and first_page.cursor is not None
    assert [g.group_id for g in every] == created
    assert every[0].owner.endswith("_alice") and every[0].affiliations == 3


async def test_joined_groups_are_the_groups_a_user_owns_or_belongs_to(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        owned = await new_group(client, members=())
        joined = await new_group(client, members=("carol",))
        await client.transfer_owner(joined, "carol")
        groups = await client.joined_groups("alice")
        none = await client.joined_groups("nobody")
    assert {g.group_id for g in groups} == {owned, joined}
    assert none == ()


async def test_update_changes_name_description_and_maxusers_only(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        answer = await client.update_group(group_id, name="renamed", description="new", maxusers=9)
        details = await client.group(group_id)
        with pytest.raises(ValueError, match="at least one"):
            await client.update_group(group_id)
    assert answer == {"groupname": True, "description": True, "maxusers": True}
    assert (details.name, details.description, details.maxusers) == ("renamed", "new", 9)


async def test_a_deleted_group_is_not_found_with_easemobs_error_fields(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        await client.delete_group(group_id)
        with pytest.raises(EasemobError) as caught:
            await client.delete_group(group_id)
    error = caught.value
    assert error.status == 404
    assert error.error == "service_resource_not_found"
    assert error.exception == "EasemobServiceResourceNotFoundException"
    assert group_id in error.error_description


async def test_members_are_added_listed_page_by_page_and_removed(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client, members=())
        one = await client.add_member(group_id, "bob")
        many = await client.add_members(group_id, ["carol", "dave", "bob"])
        page = await client.members(group_id, pagenum=2, pagesize=2)
        everyone = [m async for m in client.iter_members(group_id, pagesize=3)]
        removed = await client.remove_member(group_id, "dave")
        batch = await client.remove_members(group_id, ["carol", "zed"])
        left = [m async for m in client.iter_members(group_id)]
    assert one == UserResult("bob", True)
    assert [(r.user, r.ok) for r in many] == [("carol", True), ("dave", True), ("bob", False)]
    assert page == (Member("carol", "member"), Member("dave", "member"))
    assert everyone[0] == Member("alice", "owner") and len(everyone) == 4
    assert removed.ok and removed.user == "dave"
    assert [(r.user, r.ok) for r in batch] == [("carol", True), ("zed", False)]
    assert "not a member" in batch[1].reason
    assert left == [Member("alice", "owner"), Member("bob", "member")]


async def test_a_batch_of_more_than_60_users_is_refused_before_sending(
    emulator: RunningEmulator,
) -> None:
    users = [f"user{i}" for i in range(MAX_BATCH + 1)]
    async with emulator.client() as client:
        group_id = await new_group(client)
        sent = len(emulator.emulator.requests)
        for call in (client.add_members, client.remove_members, client.block_many,
                     client.unblock_many, client.unmute):  # fmt: skip
            with pytest.raises(BatchTooLarge) as caught:
                await call(group_id, users)
            assert (caught.value.count, caught.value.limit) == (61, 60)
        with pytest.raises(BatchTooLarge):
            await client.mute(group_id, users, 1000)
    assert len(emulator.emulator.requests) == sent


async def test_admins_are_added_listed_and_removed(emulator: RunningEmulator) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        await client.add_admin(group_id, "bob")
        await client.add_admin(group_id, "carol")
        await client.remove_admin(group_id, "bob")
        admins = await client.admins(group_id)
    assert admins == ("carol",)


async def test_the_old_owner_stays_as_a_member_after_a_transfer(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        await client.transfer_owner(group_id, "bob")
        details = await client.group(group_id)
    assert details.owner == "bob"
    assert set(details.members) == {"alice", "carol"}


async def test_the_block_list_takes_one_or_many_users_and_reports_each(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client, members=("bob", "carol", "dave"))
        one = await client.block(group_id, "bob")
        many = await client.block_many(group_id, ["carol", "alice", "erin"])
        listed = await client.blocked(group_id)
        members = {m.user async for m in client.iter_members(group_id)}
        unblocked = await client.unblock(group_id, "bob")
        batch = await client.unblock_many(group_id, ["carol", "zed"])
        after = await client.blocked(group_id)
    assert one == UserResult("bob", True)
    assert [(r.user, r.ok) for r in many] == [("carol", True), ("alice", False), ("erin", True)]
    assert "owner" in many[1].reason
    assert set(listed) == {"bob", "carol", "erin"}
    assert members == {"alice", "dave"}
    assert unblocked.ok
    assert [(r.user, r.ok) for r in batch] == [("carol", True), ("zed", False)]
    assert after == ("erin",)


async def test_mutes_carry_their_expiry_and_unmute_lifts_them(emulator: RunningEmulator) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        muted = await client.mute(group_id, ["bob", "carol", "zed"], 60_000)
        listed = await client.mutes(group_id)
        lifted = await client.unmute(group_id, ["bob"])
        left = await client.mutes(group_id)
    assert [(r.user, r.ok) for r in muted] == [("bob", True), ("carol", True), ("zed", False)]
    expire = muted[0].expire
    assert expire is not None and muted[1].expire == expire
    assert {(m.user, m.expire) for m in listed} == {("bob", expire), ("carol", expire)}
    assert lifted == (UserResult("bob", True),)
    assert [m.user for m in left] == ["carol"]


async def test_the_token_is_reused_until_shortly_before_it_expires(
    emulator: RunningEmulator,
) -> None:
    clock = FakeClock()
    ttl = emulator.emulator.settings.token_ttl
    async with emulator.client(clock=clock, sleep=clock.sleep) as client:
        group_id = await new_group(client)
        await client.admins(group_id)
        clock.now += ttl * 0.85
        await client.admins(group_id)
        fetched_before_expiry = client.transport.tokens_fetched
        clock.now += ttl * 0.1  # now within the last 10 % of the lifetime
        await client.admins(group_id)
    assert fetched_before_expiry == 1
    assert client.transport.tokens_fetched == 2
    assert emulator.emulator.tokens_issued == 2


async def test_a_token_the_server_expired_is_replaced_by_exactly_one_new_one() -> None:
    server_clock = FakeClock()
    settings = EmulatorSettings(sink_url="", token_ttl=60)
    emulator = Emulator(settings, callback_secret="s", clock=server_clock)
    server = TestServer(emulator.app())
    await server.start_server()
    try:
        async with GroupClient(client_settings_for(server, settings)) as client:
            group_id = await new_group(client)
            server_clock.now += 61  # the client still believes its token is valid
            admins = await client.admins(group_id)
    finally:
        await server.close()
    assert admins == ()
    assert client.transport.tokens_fetched == emulator.tokens_issued == 2
    assert [status for *_, status in emulator.requests] == [200, 200, 401, 200, 200]


async def test_a_401_leads_to_exactly_one_new_token_even_under_concurrency(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        emulator.emulator.expire_tokens()
        results = await asyncio.gather(*(client.admins(group_id) for _ in range(8)))
    assert results == [()] * 8
    assert client.transport.tokens_fetched == 2
    assert emulator.emulator.tokens_issued == 2
    refused = [r for r in emulator.emulator.requests if r[2] == 401]
    assert len(refused) == 8


class Forgetful(dict[str, float]):
    """A token table that never keeps a token: every request is refused with 401."""

    def __setitem__(self, key: str, value: float) -> None:
        pass


async def test_a_401_that_outlives_one_renewal_is_raised(emulator: RunningEmulator) -> None:
    emulator.emulator._tokens = Forgetful()
    async with emulator.client() as client:
        with pytest.raises(EasemobError) as caught:
            await client.admins("1")
    assert (caught.value.status, caught.value.error) == (401, "unauthorized")
    assert client.transport.tokens_fetched == 2


async def test_wrong_credentials_raise_easemobs_error(emulator: RunningEmulator) -> None:
    settings = replace(emulator.client_settings, client_secret="wrong")
    async with GroupClient(settings) as client:
        with pytest.raises(EasemobError) as caught:
            await client.admins("1")
    assert (caught.value.status, caught.value.error) == (401, "invalid_client")


async def test_429_and_503_are_retried_with_growing_back_off_then_succeed(
    emulator: RunningEmulator,
) -> None:
    clock = FakeClock()
    async with emulator.client(clock=clock, sleep=clock.sleep, jitter=lambda: 0.5) as client:
        group_id = await new_group(client)
        emulator.emulator.faults.fail_next(429, 2)
        emulator.emulator.faults.fail_next(503, 1)
        admins = await client.admins(group_id)
    assert admins == ()
    base = emulator.client_settings.backoff_base
    assert clock.slept == pytest.approx([base * 0.75, base * 1.5, base * 3])


async def test_throttling_on_every_attempt_raises_easemob_throttled(
    emulator: RunningEmulator,
) -> None:
    attempts = emulator.client_settings.max_attempts
    async with emulator.client() as client:
        group_id = await new_group(client)
        emulator.emulator.faults.fail_next(503, attempts)
        sent = len(emulator.emulator.requests)
        with pytest.raises(EasemobThrottled) as caught:
            await client.admins(group_id)
    assert len(emulator.emulator.requests) - sent == attempts
    assert caught.value.status == 503 and caught.value.error == "service_unavailable"


async def test_a_permanent_error_is_raised_at_once_with_easemobs_fields(
    emulator: RunningEmulator,
) -> None:
    async with emulator.client() as client:
        group_id = await new_group(client)
        sent = len(emulator.emulator.requests)
        with pytest.raises(EasemobError) as caught:
            await client.add_admin(group_id, "stranger")
    assert len(emulator.emulator.requests) - sent == 1
    error = caught.value
    assert (error.status, error.error) == (403, "forbidden_op")
    assert error.exception == "EasemobForbiddenOpException"
    assert "stranger" in error.error_description


async def test_credentials_and_tokens_never_reach_a_log_line(emulator: RunningEmulator) -> None:
    secret = emulator.client_settings.client_secret
    with capture_logs() as logs:
        async with emulator.client() as client:
            group_id = await new_group(client)
            emulator.emulator.expire_tokens()
            emulator.emulator.faults.fail_next(429, 1)
            await client.admins(group_id)
            token = client.transport._token
    assert token and logs
    text = " ".join(repr(entry) for entry in logs)
    assert secret not in text and token not in text
    assert secret not in repr(emulator.client_settings)
