"""The log event catalogue is true to the code: every event the package logs has an entry in
``callback_sink/log_events.toml``, every entry is an event some code logs, and
``docs/reference/log-events.md`` is what ``python -m callback_sink.docs_gen`` makes of both."""

from __future__ import annotations

from pathlib import Path

from callback_sink import docs_gen, log_events
from callback_sink.log_events import Site, events, markdown, problems, scan, sites_in

ROOT = Path(__file__).resolve().parent.parent


def test_every_logged_event_has_an_entry_and_every_entry_is_logged() -> None:
    assert problems(scan(), log_events.catalogue()) == []


def test_the_committed_page_is_the_generated_one() -> None:
    committed = docs_gen.LOG_EVENTS.read_text(encoding="utf-8")
    assert committed == markdown(), "docs/reference/log-events.md is stale: run " \
        "python -m callback_sink.docs_gen"  # fmt: skip


def test_the_scan_covers_every_shipped_package() -> None:
    where = {site.where.split(":")[0].split("/")[0] for site in scan()}
    assert {"sink", "worker", "ingress", "handlers", "easemob", "dlq_cli.py"} <= where
    names = events(scan())
    assert names["callback.handled"].levels == [
        ("info", ["ok", "duplicate"]), ("warning", ["retry"]), ("error", ["dead_letter"])
    ]  # fmt: skip
    assert "exception" in names["callback.handled"].fields  # exc_info= is rendered as it


CODE = """
from callback_sink.sink import logs
log = logs.get("worker")
other = object()

def work(failed):
    fields = {"call_id": 1} if failed else {}
    fields["error"] = "x"
    log.info("thing.done", handler="h", **fields)
    log.exception("thing.broke", exc_info=failed)
    other.info("not.a_log_line")
    _log(Outcome.RETRY, "thing.retried", attempt=2)

def _log(outcome, event, **fields):
    getattr(log, LEVELS[outcome])(event, outcome=outcome.value, **fields)
"""


def test_the_scan_reads_level_fields_and_the_outcome_wrapper() -> None:
    found = sites_in(CODE, "m.py")
    assert [(s.event, s.level, s.fields, s.component, s.outcome) for s in found] == [
        ("thing.done", "info", ("handler", "call_id", "error"), "worker", None),
        ("thing.broke", "error", ("exception",), "worker", None),
        ("thing.retried", "warning", ("outcome", "attempt"), "worker", "retry"),
    ]


def test_an_event_without_an_entry_or_an_entry_without_an_event_is_a_problem() -> None:
    sites = [Site("thing.done", "info", (), "worker", "m.py:1")]
    entries = {"sections": {"thing": "things"},
               "events": {"thing.gone": {"meaning": "m", "action": "a"}}}  # fmt: skip
    found = problems(sites, entries)
    assert any("thing.done is logged (m.py:1) but not in" in p for p in found)
    assert any("describes thing.gone, which no code logs" in p for p in found)


#: The operator's guide: it names the key events and points to the catalogue.
OPERATE = ROOT / "docs" / "howto" / "operate.md"


def test_the_operators_guide_and_the_readme_point_to_the_catalogue() -> None:
    assert "../reference/log-events.md" in OPERATE.read_text(encoding="utf-8")
    assert "docs/reference/log-events.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_operators_guides_key_events_are_logged() -> None:
    guide = OPERATE.read_text(encoding="utf-8")
    table = guide.split("<!-- key log events", 1)[1].split("<!-- /key log events -->", 1)[0]
    named = [row.split("`")[1] for row in table.splitlines() if row.startswith("| `")]
    assert named and set(named) - {"event"} <= set(events(scan()))
