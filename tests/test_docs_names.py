"""The pages that send an operator from a symptom to a fix name only log events the sink logs
(callback_sink/log_events.toml) and settings that are declared: a renamed event or setting
fails here instead of leaving a reader searching the logs for a line that never comes."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from callback_sink.environment import every_variable
from callback_sink.sink.events import Event

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "callback_sink" / "log_events.toml"
PAGES = (
    "docs/howto/troubleshoot.md",
    "docs/howto/deploy-vm.md",
    "docs/howto/rotate-secret.md",
    "docs/howto/scale-workers.md",
    "docs/howto/upgrade.md",
    "docs/explanation/guarantees.md",
    "docs/explanation/security.md",
    "docs/tutorials/first-callback.md",
    "docs/tutorials/first-handler-package.md",
    "deploy/systemd/callback-sink.env.example",
)
#: A dotted name in backquotes (`spool.full`), or the event of a pasted JSON log line.
DOTTED = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+)`|\"event\":\"([a-z_.]+)\"")
VARIABLE = re.compile(r"\bSINK_[A-Z0-9_]*[A-Z0-9]\b")


def catalogue() -> tuple[set[str], set[str]]:
    """The logged events, and the first words that make a dotted name one (``spool``)."""
    found = tomllib.loads(CATALOGUE.read_text(encoding="utf-8"))
    return set(found["events"]), set(found["sections"])


def cited_events(text: str) -> set[str]:
    """The dotted names of ``text`` that read as log events: their first word is a section of
    the catalogue, and they are not an ``Event`` attribute (`event.dedup_key`) or a file."""
    _, sections = catalogue()
    attributes = {f"event.{f.name}" for f in dataclasses.fields(Event)}
    attributes |= {f"event.{name}" for name in dir(Event) if not name.startswith("_")}
    names = {a or b for a, b in DOTTED.findall(text)}
    return {
        name
        for name in names
        if name.split(".")[0] in sections
        and name not in attributes
        and not name.endswith((".py", ".md"))
    }


@pytest.mark.parametrize("page", PAGES)
def test_every_log_event_the_page_cites_is_logged(page: str) -> None:
    events, _ = catalogue()
    cited = cited_events((ROOT / page).read_text(encoding="utf-8"))
    assert sorted(cited - events) == []


@pytest.mark.parametrize("page", PAGES)
def test_every_setting_the_page_names_is_declared(page: str) -> None:
    declared = {variable.name for variable in every_variable()}
    named = set(VARIABLE.findall((ROOT / page).read_text(encoding="utf-8")))
    assert sorted(named - declared) == []


def test_the_scan_finds_events_and_tells_them_from_attributes_and_files() -> None:
    text = '`spool.full`, `event.dedup_key`, `worker/dlq.py`, {"event":"callback.handled"}'
    assert cited_events(text) == {"spool.full", "callback.handled"}
    assert cited_events((ROOT / "docs/howto/troubleshoot.md").read_text(encoding="utf-8"))
