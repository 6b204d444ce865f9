"""The directory handler through the testing kit: start-up hook, records, duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from callback_sink.handlers.directory import DirectorySettings, open_directory, track_groups
from callback_sink.sink.errors import StartupError
from callback_sink.testing import Outcome, SinkTester, make_event

EASEMOB_VARIABLES = ("HOST", "ORG", "APP", "CLIENT_ID", "CLIENT_SECRET", "CLIENT_SECRET_FILE")


@pytest.fixture
def directory_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SINK_DIRECTORY_URL set to a fresh SQLite file, no REST credentials."""
    url = f"sqlite:///{tmp_path}/directory.sqlite3"
    monkeypatch.setenv("SINK_DIRECTORY_URL", url)
    for name in EASEMOB_VARIABLES:
        monkeypatch.delenv(f"SINK_EASEMOB_{name}", raising=False)
    return url


@pytest.fixture
async def tester(directory_url: str) -> AsyncIterator[SinkTester]:
    async with SinkTester("callback_sink.handlers.directory", use_entry_points=False) as tester:
        yield tester


async def test_group_callbacks_run_through_the_kit_build_the_directory_once_each(
    tester: SinkTester, directory_url: str
) -> None:
    created = make_event("muc:create", group_id="777", to="owner1")
    joined = make_event("muc:presence", group_id="777", from_="XXXX#XXXX_bob@easemob.com")
    report = await tester.run([created, joined, created])
    assert report.outcomes(track_groups) == [Outcome.OK, Outcome.OK, Outcome.DUPLICATE]
    async with open_directory(DirectorySettings(url=directory_url)) as directory:
        group = await directory.group("777")
    assert group is not None and group.owner == "owner1"
    assert "bob" in group.members


async def test_events_of_other_families_do_not_reach_the_directory(tester: SinkTester) -> None:
    report = await tester.run(make_event("roster:add"))
    assert report.outcomes(track_groups) == []


async def test_a_bad_directory_url_stops_the_tester_at_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SINK_DIRECTORY_URL", "mysql://localhost/db")
    tester = SinkTester("callback_sink.handlers.directory", use_entry_points=False)
    with pytest.raises(StartupError, match="SINK_DIRECTORY_URL"):
        await tester.run(make_event("muc:create"))
