"""Transactional handlers: the done mark is a row committed in the handler's own PostgreSQL
transaction (the inbox), so a callback's writes land exactly once, whatever is redelivered.

Each test has a uuid-named schema on the shared PostgreSQL (127.0.0.1:5432, database
``test``): its inbox table and a ``rows`` table without a unique constraint of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from callback_sink import Event, PermanentError, Transaction, on
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.handlers.directory.tracker import HANDLER, Tracker
from callback_sink.handlers.registry import _MARK, _NAME_MARK, _OPTIONS_MARK, Handler, Registry
from callback_sink.handlers.transactional import Inbox
from callback_sink.sink.errors import (
    ConfigError,
    HandlerLoadError,
    InboxDuplicate,
    StartupError,
)
from callback_sink.sink.settings import Settings
from callback_sink.testing import SinkTester, make_event
from callback_sink.worker.consumer import Worker
from callback_sink.worker.dedup import MemoryStore
from tests.directory_fixtures import postgres_url_fixture  # noqa: F401
from tests.inbox_fixtures import Schema, inserting, schema_fixture  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def kit_on(schema: Schema, *handlers: Any, **overrides: Any) -> SinkTester:
    """A kit tester whose transactional handlers run on ``schema``'s inbox (a fresh memory
    dedup store each time: a new tester is a worker that lost every Redis mark)."""
    return SinkTester(
        *handlers,
        inbox_url=schema.url, inbox_table=schema.inbox_table, **overrides,
    )  # fmt: skip


async def test_the_kit_runs_a_transactional_handler_and_commits_its_row_with_the_inbox_row(
    schema: Schema,
) -> None:
    event = make_event("muc:kick")
    async with kit_on(schema, inserting(schema, "writer")) as kit:
        report = await kit.run(event)
    assert report.outcomes("writer") == ["ok"]
    assert await schema.rows() == {f"writer|{event.dedup_key}": 1}
    assert await schema.inbox_rows() == 1


async def test_a_callback_found_in_the_inbox_is_a_duplicate_and_the_handler_does_not_run(
    schema: Schema,
) -> None:
    """The crash window after COMMIT: the Redis done mark never landed (a fresh memory
    store), yet the redelivery finds the inbox row and skips the handler."""
    event = make_event("muc:kick")
    started: list[int] = []
    writer = inserting(schema, "writer", before=lambda _, n: started.append(n))
    async with kit_on(schema, writer) as kit:
        await kit.run(event)
    with capture_logs() as logs:
        async with kit_on(schema, writer) as kit:
            report = await kit.run(event)
    assert report.outcomes("writer") == ["duplicate"]
    assert started == [1], "the handler did not run again"
    assert await schema.rows() == {f"writer|{event.dedup_key}": 1}
    handled = [line for line in logs if line["event"] == "callback.handled"]
    assert [(line["outcome"], line.get("found_by")) for line in handled] == [("duplicate", "inbox")]


async def test_a_failed_transactional_run_rolls_back_its_rows_and_inbox_row_and_the_retry_runs(
    schema: Schema,
) -> None:
    def fail_first(event: Event, attempt: int) -> None:
        if attempt == 1:
            raise ConnectionError("the downstream service is away")

    event = make_event("muc:kick")
    async with kit_on(schema, inserting(schema, "writer", before=fail_first)) as kit:
        report = await kit.run(event)
    # Attempt 1 inserted its row and failed: rolled back with its inbox row, so attempt 2
    # was not a duplicate, and only its row is left.
    assert report.outcomes("writer") == ["retry", "ok"]
    assert await schema.rows() == {f"writer|{event.dedup_key}": 1}
    assert await schema.inbox_rows() == 1


async def test_a_replayed_dead_letter_without_its_inbox_row_runs(schema: Schema) -> None:
    """``dlq replay`` puts the letter back with its settled handlers (x-sink-settled) and a
    fresh attempt count; x-sink-replayed only marks the log lines. The dead-lettered
    handler left no Redis mark and no inbox row, so the replay runs it, once."""

    def permanent_once(event: Event, attempt: int) -> None:
        if attempt == 1:
            raise PermanentError("bad data, fixed by the operator")

    event = make_event("muc:kick")
    async with kit_on(schema, inserting(schema, "writer", before=permanent_once)) as kit:
        first = await kit.run(event)
        assert first.outcomes("writer") == ["dead_letter"]
        assert await schema.inbox_rows() == 0
        replayed = await kit.run(event)  # the replayed copy: same callback, attempt 1
    assert replayed.outcomes("writer") == ["ok"]
    assert await schema.rows() == {f"writer|{event.dedup_key}": 1}


async def test_postgresql_dropping_the_connection_defers_the_callback_with_nothing_committed(
    schema: Schema,
) -> None:
    kill = sa.text("SELECT pg_terminate_backend(pg_backend_pid())")
    calls: list[int] = []

    @on("muc:kick", transactional=True, name="terminated")
    async def terminated(event: Event, tx: Transaction) -> None:
        calls.append(1)
        await tx.execute(sa.text(f"INSERT INTO {schema.rows_table} VALUES ('t', 'k')"))
        if len(calls) == 1:
            await tx.execute(kill)

    registry = Registry([_handler(terminated)])
    event = make_event("muc:kick")
    with capture_logs() as logs:
        async with kit_on(schema, registry=registry) as kit:
            report = await kit.run(event)
            assert report.outcomes("terminated") == ["deferred"]
            assert await schema.inbox_rows() == 0 and await schema.rows() == {}
            again = await kit.run(event)  # the deferred copy comes back
    assert again.outcomes("terminated") == ["ok"]
    assert await schema.rows() == {"t|k": 1}
    deferred = [line for line in logs if line["event"] == "callback.deferred"]
    assert [line["reason"] for line in deferred] == ["inbox_unavailable"]
    assert any(line["event"] == "inbox.unavailable" for line in logs)


async def test_a_transactional_handler_without_sink_inbox_url_stops_the_worker_at_start_naming_both(
    settings: Settings,
) -> None:
    @on("muc:kick", transactional=True, name="myapp.record_kick")
    async def record_kick(event: Event, tx: Transaction) -> None:
        return None

    registry = Registry([_handler(record_kick)])
    for start in (
        lambda: Worker(settings, registry, MemoryStore()),
        lambda: SinkTester(registry=registry),
    ):
        with pytest.raises(ConfigError) as failed:
            start()
        assert "SINK_INBOX_URL" in str(failed.value)
        assert "myapp.record_kick" in str(failed.value)


def test_a_transactional_handler_must_take_the_transaction() -> None:
    with pytest.raises(HandlerLoadError, match=r"must take \(event, tx\)"):

        @on("muc:kick", transactional=True)  # type: ignore[type-var]
        async def one_argument(event: Event) -> None:
            return None


def test_the_inbox_url_is_checked_and_never_shown() -> None:
    with pytest.raises(ConfigError, match="SINK_INBOX_URL must start with postgresql://"):
        Settings(inbox_url="mysql://db/x").check()
    with pytest.raises(ConfigError, match="SINK_INBOX_TABLE"):
        Settings(inbox_table="inbox; DROP TABLE x").check()
    assert "s3cret" not in repr(Settings(inbox_url="postgresql://u:s3cret@h/db"))


async def test_inbox_rows_older_than_the_ttl_are_deleted_at_start(schema: Schema) -> None:
    async with kit_on(schema, inserting(schema, "writer")) as kit:
        await kit.run(make_event("muc:kick"))
    await schema.execute(
        f"INSERT INTO {schema.inbox_table} (handler, dedup_key, done_at) "
        "VALUES ('writer', 'old', now() - interval '5 days')"
    )
    engine = create_async_engine(schema.url.replace("postgresql://", "postgresql+asyncpg://"))
    inbox = Inbox(engine, schema.inbox_table, ttl=4 * 86400)
    try:
        await inbox.start()
        assert not await inbox.done("writer", "old")
        assert await schema.inbox_rows() == 1  # the fresh one stays
    finally:
        await inbox.close()
        await engine.dispose()


async def test_the_directory_on_postgresql_commits_its_facts_with_its_inbox_row(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SINK_INBOX_TABLE", raising=False)
    tracker = await Tracker.open(
        DirectorySettings(url=postgres_url, fetch=False), EasemobSettings()
    )
    try:
        assert tracker.inbox is not None
        event = make_event("muc:kick", group_id="77")
        await tracker.record(event)
        with pytest.raises(InboxDuplicate):
            await tracker.record(event)  # the redelivery: nothing applied twice
        assert await tracker.inbox.done(HANDLER, event.dedup_key)
    finally:
        await tracker.close()


def _handler(func: Any) -> Handler:
    """The :class:`Handler` of an ``@on``-marked function defined in a test, as ``collect``
    makes it from a handler module."""
    return Handler(
        getattr(func, _NAME_MARK), func, getattr(func, _MARK), getattr(func, _OPTIONS_MARK)
    )


async def test_a_worker_whose_inbox_database_does_not_exist_stops_at_start_naming_the_setting(
    start_worker: Callable[..., Awaitable[Worker]], schema: Schema
) -> None:
    @on("muc:kick", transactional=True, name="myapp.record_kick")
    async def record_kick(event: Event, tx: Transaction) -> None:
        return None

    base, _, _ = schema.url.rpartition("/")
    with pytest.raises(StartupError, match="SINK_INBOX_URL: cannot open the inbox table"):
        await start_worker(
            _handler(record_kick), inbox_url=f"{base}/no_such_{uuid.uuid4().hex[:8]}"
        )
