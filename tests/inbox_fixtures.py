"""PostgreSQL for the inbox tests: a uuid-named schema on the shared server, transactional
test handlers that insert one row per callback into a table with no unique constraint, and
(for the fault scenarios) a private PostgreSQL server of their own that may be killed.

The shared server on 127.0.0.1:5432 is never stopped: a scenario that restarts PostgreSQL
runs :class:`PrivatePostgres`, an ``initdb`` of its own in a temporary folder owned by the
``postgres`` user, on a free port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from callback_sink.handlers.registry import Handler, Options
from callback_sink.handlers.transactional import Transaction
from callback_sink.sink.events import Event
from callback_sink.testing.ports import free_port
from tests.needs import missing

#: The shared server's test database (trust authentication).
INBOX_URL = os.environ.get("SINK_TEST_INBOX_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Where PostgreSQL 15's server programs are (Debian's postgresql-15).
PG_BIN = Path(os.environ.get("SINK_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


async def check_postgres(url: str = INBOX_URL) -> None:
    """A real handshake with the shared server: skip locally, fail under CI=true."""
    try:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()
    except Exception as exc:
        missing(f"PostgreSQL is not reachable at {url}: {exc}")


@dataclass(frozen=True)
class Schema:
    """One test's schema: its inbox table and the handlers' ``rows`` table."""

    url: str
    name: str

    @property
    def inbox_table(self) -> str:
        return f"{self.name}.inbox"

    @property
    def rows_table(self) -> str:
        return f"{self.name}.rows"

    async def execute(self, statement: str) -> None:
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def fetchval(self, query: str) -> object:
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            return await connection.fetchval(query)
        finally:
            await connection.close()

    async def rows(self) -> dict[str, int]:
        """How many rows each handler|key has in ``rows``."""
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            found = await connection.fetch(
                f"SELECT handler || '|' || key AS k, count(*) AS n FROM {self.rows_table} "
                "GROUP BY 1"
            )
        finally:
            await connection.close()
        return {r["k"]: r["n"] for r in found}

    async def inbox_rows(self) -> int:
        return int(str(await self.fetchval(f"SELECT count(*) FROM {self.inbox_table}")))


async def new_schema(url: str = INBOX_URL) -> Schema:
    """A uuid-named schema with an empty ``rows`` table: no unique constraint, so a callback
    run twice shows as two rows."""
    schema = Schema(url, f"inbox_{uuid.uuid4().hex[:12]}")
    await schema.execute(
        f"CREATE SCHEMA {schema.name}; "
        f"CREATE TABLE {schema.rows_table} (handler text NOT NULL, key text NOT NULL)"
    )
    return schema


@pytest.fixture(name="schema")
async def schema_fixture() -> AsyncIterator[Schema]:
    """A schema of this test's own on the shared PostgreSQL, dropped afterwards."""
    await check_postgres()
    found = await new_schema()
    try:
        yield found
    finally:
        await found.execute(f"DROP SCHEMA IF EXISTS {found.name} CASCADE")


def inserting(
    schema: Schema,
    name: str,
    subscriptions: tuple[str, ...] = ("*",),
    before: Callable[[Event, int], None] | None = None,
) -> Handler:
    """A transactional handler ``name`` inserting ``name|dedup key`` into ``rows``; ``before``
    (given the event and how many times this handler started for it) may raise."""
    starts: dict[str, int] = {}
    insert = sa.text(f"INSERT INTO {schema.rows_table} (handler, key) VALUES (:h, :k)")

    async def run(event: Event, tx: Transaction) -> None:
        starts[event.dedup_key] = starts.get(event.dedup_key, 0) + 1
        await tx.execute(insert, {"h": name, "k": event.dedup_key})
        if before is not None:
            before(event, starts[event.dedup_key])

    return Handler(name, run, subscriptions, Options(transactional=True))  # type: ignore[arg-type]


class PrivatePostgres:
    """A PostgreSQL server of one test's own (``initdb`` into a temporary folder owned by the
    ``postgres`` user, on a free port), which the test may stop with ``-m immediate`` (a
    crash: nothing flushed, recovery at the next start) and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sink-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def available() -> str | None:
        """Why a private server cannot run here, or None."""
        if not (PG_BIN / "initdb").exists():
            return f"no {PG_BIN}/initdb"
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            return "a private PostgreSQL needs root (runuser -u postgres)"
        return None

    async def _as_postgres(self, *argv: str) -> None:
        process = await asyncio.create_subprocess_exec(
            "runuser", "-u", "postgres", "--", *argv,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 120)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {err.decode(errors='replace')}")

    async def init(self) -> None:
        shutil.chown(self.dir, "postgres", "postgres")
        await self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        await self.start()

    async def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        await self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
            "-l", str(self.dir / "log"), "start",
        )  # fmt: skip

    async def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every backend killed, nothing shut down cleanly."""
        await self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m",
                                "immediate", "stop")  # fmt: skip

    async def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)
