"""The ``callback_sink.handlers.directory`` module: registration, configuration, REST, CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import callback_sink.handlers.directory as directory_module
from callback_sink import cli
from callback_sink.easemob.models import NewGroup
from callback_sink.handlers.directory import DirectorySettings, Tracker, open_directory
from callback_sink.handlers.directory import facts as f
from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.store import Directory
from callback_sink.handlers.registry import collect
from callback_sink.sink.errors import ConfigError, Retry
from callback_sink.sink.events import Event, decode, from_document
from callback_sink.sink.examples import load_examples
from tests.directory_fixtures import RunningEmulator, emulator_fixture  # noqa: F401

EASEMOB_VARIABLES = ("HOST", "ORG", "APP", "CLIENT_ID", "CLIENT_SECRET", "CLIENT_SECRET_FILE")


def spec_event(operation: str) -> Event:
    body = next(
        e.body for e in load_examples()
        if e.body.get("chat_type") == "muc" and e.body["payload"]["operation"] == operation
    )  # fmt: skip
    return from_document(body)


@pytest.fixture
async def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """SINK_DIRECTORY_URL set to a fresh SQLite file, no REST credentials."""
    url = f"sqlite:///{tmp_path}/directory.sqlite3"
    monkeypatch.setenv("SINK_DIRECTORY_URL", url)
    for name in EASEMOB_VARIABLES:
        monkeypatch.delenv(f"SINK_EASEMOB_{name}", raising=False)
    yield url
    await directory_module.close()


def test_the_module_registers_one_handler_for_both_group_families() -> None:
    handlers = collect(directory_module)
    assert [(h.name, h.subscriptions) for h in handlers] == [
        ("handlers.directory.track_groups", ("muc", "group_op"))
    ]


async def test_the_handler_opens_the_configured_store_once_and_records_callbacks(
    configured: str,
) -> None:
    await directory_module.track_groups(spec_event("create"))
    first = await directory_module.tracker()
    await directory_module.track_groups(spec_event("presence"))
    assert await directory_module.tracker() is first
    assert first.client is None  # no credentials: no lookups
    async with open_directory(DirectorySettings(url=configured)) as directory:
        create = await directory.group("173556296122369")
        presence = await directory.group("173548612157441")
    assert create is not None and create.owner == "1111"
    assert presence is not None and presence.members == ("1111",)


async def test_a_bad_directory_url_fails_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SINK_DIRECTORY_URL", "mysql://localhost/db")
    with pytest.raises(ConfigError, match="SINK_DIRECTORY_URL"):
        await directory_module.track_groups(spec_event("create"))
    with pytest.raises(ConfigError, match="SINK_DIRECTORY_URL"):  # tried again, not cached
        await directory_module.track_groups(spec_event("create"))


async def tracker_on(emulator: RunningEmulator, tmp_path: Path) -> Tracker:
    directory = await Directory.open(DirectorySettings(url=f"sqlite:///{tmp_path}/d.sqlite3"))
    return Tracker(directory, emulator.client())


async def replay(tracker: Tracker, emulator: RunningEmulator) -> None:
    for doc in emulator.emulator.callbacks.outbox:
        await tracker.record(decode(orjson.dumps(doc)))


async def test_lookups_fill_in_the_model_fields_and_the_mute_expiry(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    tracker = await tracker_on(emulator, tmp_path)
    async with emulator.client() as client:
        group_id = await client.create_group(
            NewGroup(
                name="team",
                owner="alice",
                description="d",
                public=False,
                maxusers=30,
                members=("bob",),
            )
        )
        muted = await client.mute(group_id, ["bob"], 600_000)
    await replay(tracker, emulator)
    view = await tracker.directory.group(group_id)
    await tracker.close()
    assert view is not None
    assert (view.name, view.description, view.public, view.maxusers) == ("team", "d", False, 30)
    assert (view.membersonly, view.allowinvites) == (False, False)
    assert [(m.user, m.expire) for m in view.mutes] == [("bob", muted[0].expire)]


async def test_a_mute_callback_handled_after_the_mute_ran_out_records_the_user_unmuted(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    tracker = await tracker_on(emulator, tmp_path)
    async with emulator.client() as client:
        group_id = await client.create_group(NewGroup(name="t", owner="alice", members=("bob",)))
        await client.mute(group_id, ["bob"], 1_000)
    emulator.advance(2.0)  # Easemob lifts the mute silently: only the mute list tells
    await replay(tracker, emulator)
    view = await tracker.directory.group(group_id)
    await tracker.close()
    assert view is not None and view.members == ("bob",)
    assert view.mutes == ()


async def test_an_update_callback_looks_the_new_fields_up(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    tracker = await tracker_on(emulator, tmp_path)
    async with emulator.client() as client:
        group_id = await client.create_group(NewGroup(name="team", owner="alice"))
        await replay(tracker, emulator)
        before = await tracker.directory.group(group_id)
        await client.update_group(group_id, name="renamed", maxusers=12)
    update = decode(orjson.dumps(emulator.emulator.callbacks.outbox[-1]))
    await tracker.record(update)
    after = await tracker.directory.group(group_id)
    await tracker.close()
    assert update.name == "muc:update"
    assert before is not None and (before.name, before.maxusers) == ("team", 200)
    assert after is not None and (after.name, after.maxusers) == ("renamed", 12)


async def test_a_throttled_lookup_asks_the_worker_to_retry_the_callback_later(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    tracker = await tracker_on(emulator, tmp_path)
    async with emulator.client() as client:
        await client.create_group(NewGroup(name="team", owner="alice"))
    emulator.emulator.faults.fail_next(429, emulator.client_settings.max_attempts)
    with pytest.raises(Retry) as caught:
        await replay(tracker, emulator)
    await tracker.close()
    assert caught.value.delay is not None and caught.value.delay > 0


async def test_a_group_gone_by_lookup_time_is_stored_without_its_fields(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    tracker = await tracker_on(emulator, tmp_path)
    async with emulator.client() as client:
        group_id = await client.create_group(NewGroup(name="team", owner="alice"))
        await client.delete_group(group_id)
    await replay(tracker, emulator)
    view = await tracker.directory.group(group_id)
    await tracker.close()
    assert view is not None and view.destroyed and view.owner == "alice"
    assert view.name is None


def test_the_groups_commands_print_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/directory.sqlite3"
    for name, value in {"SINK_DIRECTORY_URL": url, "SINK_LOG_FORMAT": "console",
                        "SINK_LOG_LEVEL": "debug"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)

    async def fill() -> None:
        async with open_directory(DirectorySettings(url=url)) as directory:
            year_2100 = 4_102_444_800_000
            mutes = [Fact(f.MUTE, "bob", value=year_2100), Fact(f.MUTE, "carol", value=1)]
            facts = [*f.became_owner("alice"), *f.joined("bob"), *mutes]
            await directory.apply("4242", facts, timestamp=1, call_id="c")
            await directory.apply("4242", f.fields({"name": "team"}), timestamp=2, call_id="d")

    asyncio.run(fill())
    assert cli.main(["groups", "list"]) == 0
    listing = capsys.readouterr().out
    assert "4242" in listing and "alice" in listing and "team" in listing
    assert cli.main(["groups", "show", "4242"]) == 0
    shown = capsys.readouterr().out
    assert "owner:" in shown and "members (1):" in shown and "bob until" in shown
    assert "carol" not in shown  # her mute ran out: Easemob lifted it without a callback
    assert cli.main(["groups", "show", "4242", "--json"]) == 0
    data: dict[str, Any] = orjson.loads(capsys.readouterr().out)
    assert data["owner"] == "alice" and data["members"] == ["bob"]
    assert cli.main(["groups", "show", "9999"]) == 1
