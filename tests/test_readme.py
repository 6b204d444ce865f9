"""The README stays a complete user's document: every setting and every event name in it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.sink import names
from callback_sink.sink.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("settings", "prefix"),
    [
        (Settings, "SINK_"),
        (EasemobSettings, "SINK_EASEMOB_"),
        (EmulatorSettings, "SINK_EMULATOR_"),
        (DirectorySettings, "SINK_DIRECTORY_"),
    ],
)
def test_every_setting_is_documented(settings: type, prefix: str) -> None:
    variables = [f"{prefix}{f.name.upper()}" for f in fields(settings)]
    assert [var for var in variables if f"`{var}`" not in README] == []


def test_every_event_name_is_documented() -> None:
    missing = [name for name in sorted(names.KNOWN_NAMES) if f"`{name}`" not in README]
    missing = [n for n in missing if not n.endswith(":unknown")]  # documented as <family>:unknown
    assert missing == []


def test_the_quick_start_shows_the_two_commands() -> None:
    assert "make run" in README and "make test" in README
