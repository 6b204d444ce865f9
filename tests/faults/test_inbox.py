"""Exactly-once effects of a transactional handler, through worker SIGKILLs and a PostgreSQL
crash: every accepted callback has exactly one row, while a plain handler doing the same
work in the same run shows the repeats that at-least-once allows.

Two handlers run for every callback (tests/inbox_recording.py): ``plain`` appends to a file,
``booked`` inserts a row into a table with no unique constraint, inside its inbox
transaction. Each prints an ``INBOX FIGURES`` line (-s) and a ``FAULT FIGURES`` line.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.faults.harness import Figures, Sender, Sink, stream_bodies
from tests.inbox_fixtures import INBOX_URL, PrivatePostgres, Schema, check_postgres, new_schema
from tests.needs import missing
from tests.recording import read_records

pytestmark = pytest.mark.faults

#: Callbacks streamed per scenario, and how fast (a stream of about ten seconds).
CALLBACKS = 2000
RATE = 200.0
#: Where in the stream the worker is SIGKILLed (and restarted at once).
KILLS_AT = (0.1, 0.25, 0.4, 0.55, 0.7)
#: Where in the stream PostgreSQL is crashed (``pg_ctl stop -m immediate``), and how long
#: it stays down before it is started again (recovery included), seconds.
PG_CRASHES_AT = (0.25, 0.6)
PG_DOWN_S = 3.0
#: How long the backlog may take to drain once the stream ended: deferrals back off up to
#: 30 s (worker.decide), and a killed worker's claims lapse after SINK_CLAIM_LEASE (5 s).
SETTLE_WITHIN = 150.0


@dataclass
class Counts:
    """Per handler: callbacks with no run (missing) and runs beyond the first (repeats)."""

    missing: int
    repeats: int


def counts(expected: set[str], runs: Counter[str]) -> Counts:
    return Counts(len(expected - set(runs)), sum(n - 1 for n in runs.values() if n > 1))


async def booked_rows(schema: Schema) -> Counter[str]:
    connection = await asyncpg.connect(schema.url, timeout=10)
    try:
        query = f"SELECT key, count(*) AS n FROM {schema.rows_table} GROUP BY key"
        found = await connection.fetch(query)
    finally:
        await connection.close()
    return Counter({r["key"]: r["n"] for r in found})


async def settle(
    sink: Sink, schema: Schema, sender: Sender, scenario: str
) -> tuple[Counts, Counts]:
    """Wait until every accepted callback has its row and its ledger line, then count (a
    late redelivery would show up in the 1.5 s after)."""
    keys = {key for key, _ in sender.accepted}
    deadline = time.monotonic() + SETTLE_WITHIN
    while time.monotonic() < deadline:
        plain = {k.partition("|")[2] for k in read_records(sink.records)}
        if keys <= plain and keys <= set(await booked_rows(schema)):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.5)  # anything redelivered late would show up now
    plain_runs = Counter({k.partition("|")[2]: n for k, n in read_records(sink.records).items()})
    booked = counts(keys, await booked_rows(schema))
    plain = counts(keys, plain_runs)
    inbox_duplicates = sum(
        line.get("found_by") == "inbox"
        for p in sink.all_processes()
        for line in p.events("callback.handled")
    )
    figures = Figures(
        scenario, sent=len(sender.bodies), accepted=len(sender.accepted),
        refused=len(sender.refused), non_200_answers=sender.non_200,
        handled=sum(plain_runs.values()), duplicates_suppressed=sink.duplicates(),
        lost=booked.missing + plain.missing, extra_runs=plain.repeats + booked.repeats,
        seconds=round(time.monotonic() - sender.started_at, 1),
        notes={"booked_missing": booked.missing, "booked_duplicated": booked.repeats,
               "plain_missing": plain.missing, "plain_repeats": plain.repeats,
               "inbox_found_done": inbox_duplicates},
    )  # fmt: skip
    print(
        f"\nINBOX FIGURES {scenario}: transactional rows missing={booked.missing} "
        f"duplicated={booked.repeats}; plain handler missing={plain.missing} "
        f"repeats={plain.repeats}; duplicates found by the inbox={inbox_duplicates}"
    )
    print(f"FAULT FIGURES {figures.report()}")
    return booked, plain


def inbox_sink(workdir: Path, amqp_url: str, redis_url: str, schema: Schema) -> Sink:
    return Sink(
        workdir, amqp_url, redis_url,
        SINK_HANDLERS="tests.inbox_recording",
        SINK_INBOX_URL=schema.url,
        SINK_INBOX_TABLE=schema.inbox_table,
        SINK_TEST_INBOX_ROWS=schema.rows_table,
        SINK_HANDLER_TIMEOUT="5",
        SINK_DEDUP_TTL="900",  # this run's Redis marks go away on their own
        SINK_MAX_AGE_S="600",  # (below SINK_DEDUP_TTL, as it must be)
    )  # fmt: skip


@pytest.fixture
async def shared_schema() -> AsyncIterator[Schema]:
    await check_postgres()
    schema = await new_schema(INBOX_URL)
    try:
        yield schema
    finally:
        await schema.execute(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    if (why := PrivatePostgres.available()) is not None:
        missing(why)
    server = PrivatePostgres()
    try:
        await server.init()
        yield server
    finally:
        await server.destroy()


async def test_a_transactional_handler_writes_each_row_once_through_five_worker_sigkills(
    tmp_path: Path, amqp_url: str, redis_url: str, shared_schema: Schema
) -> None:
    sink = inbox_sink(tmp_path, amqp_url, redis_url, shared_schema)
    try:
        await sink.start_ingress()
        worker = await sink.start_worker()
        sender = Sender(sink.url, stream_bodies(CALLBACKS, "inbox-kill"), rate=RATE)
        stream = asyncio.create_task(sender.run())
        for fraction in KILLS_AT:
            await sender.reached(fraction)
            await worker.stop(signal.SIGKILL)
            sink.retire(worker)
            worker = await sink.start_worker()
        await stream
        booked, plain = await settle(sink, shared_schema, sender, "worker SIGKILL x5")
    finally:
        await sink.close()
    assert sender.refused == [] and len(sender.accepted) == CALLBACKS
    assert (booked.missing, booked.repeats) == (0, 0)
    assert plain.missing == 0


async def test_a_transactional_handler_writes_each_row_once_through_postgresql_crashes(
    tmp_path: Path, amqp_url: str, redis_url: str, private_postgres: PrivatePostgres
) -> None:
    schema = await new_schema(private_postgres.url)
    sink = inbox_sink(tmp_path, amqp_url, redis_url, schema)
    try:
        await sink.start_ingress()
        await sink.start_worker()
        sender = Sender(sink.url, stream_bodies(CALLBACKS, "inbox-pg"), rate=RATE)
        stream = asyncio.create_task(sender.run())
        for fraction in PG_CRASHES_AT:
            await sender.reached(fraction)
            await private_postgres.crash()
            await asyncio.sleep(PG_DOWN_S)  # the scenario: PostgreSQL stays down a while
            await private_postgres.start()
        await stream
        booked, plain = await settle(sink, schema, sender, "PostgreSQL crash x2")
        unavailable = sum(len(p.events("inbox.unavailable")) for p in sink.all_processes())
    finally:
        await sink.close()
    assert sender.refused == [] and len(sender.accepted) == CALLBACKS
    assert (booked.missing, booked.repeats) == (0, 0)
    assert plain.missing == 0
    print(f"INBOX FIGURES PostgreSQL crash x2: inbox.unavailable lines (deferred)={unavailable}")
    assert unavailable > 0, "the crashes really happened mid-stream"
