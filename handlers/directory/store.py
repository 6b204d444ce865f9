"""The directory's storage: one table of facts, SQLite or PostgreSQL through one code path.

Each row is the latest fact for (group, kind, subject) with the timestamp and callId of the
event that stated it. Writing is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` whose
condition lets a fact replace the stored one only if its event is newer — by timestamp,
then by callId so that ties resolve the same way everywhere. The database applies that
condition atomically per row, so any number of workers may write at once, in any order,
any number of times, and end with the same rows. A removal is a row with ``present``
false (a tombstone), so an older "add" arriving late cannot bring it back.

SQLAlchemy Core (asyncio) with aiosqlite and asyncpg gives both databases one statement;
only the ``insert`` construct that knows ``ON CONFLICT`` comes from the dialect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.handlers.directory.view import GroupView, Row, fold
from callback_sink.sink.errors import SinkError

metadata = sa.MetaData()

facts_table = sa.Table(
    "directory_facts",
    metadata,
    sa.Column("group_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("present", sa.Boolean, nullable=False),
    sa.Column("value", sa.Text, nullable=True),  # JSON
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("call_id", sa.String(255), nullable=False),
)


class NoDirectory(SinkError):
    """A read-only command found no directory where ``SINK_DIRECTORY_URL`` points."""


#: How long an SQLite writer waits for another process's write lock, ms.
SQLITE_BUSY_TIMEOUT_MS = 10_000


class Directory:
    """Read and write the directory. Open with :func:`open_directory` or :meth:`open`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    @classmethod
    async def open(cls, settings: DirectorySettings, *, create: bool = True) -> Directory:
        """Connect and create the table if needed; with ``create=False`` (the read-only
        commands) create nothing: no file, no folder, no table, but raise
        :class:`NoDirectory` when there is none yet."""
        path = settings.sqlite_path()
        options: dict[str, Any] = {}
        if path is not None:
            if not create and not path.is_file():
                raise NoDirectory(f"no group directory at {path} (SINK_DIRECTORY_URL)")
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            # One connection per process: SQLite has one writer at a time anyway, and a
            # pool of one makes concurrent handlers queue here instead of failing "locked".
            options = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 60}
        engine = create_async_engine(settings.engine_url(), **options)
        if engine.dialect.name == "sqlite":
            pragmas = _sqlite_pragmas if create else _sqlite_read_pragmas
            sa.event.listen(engine.sync_engine, "connect", pragmas)
        async with engine.begin() as conn:
            if create:
                await conn.run_sync(metadata.create_all)
            elif not await conn.run_sync(lambda c: sa.inspect(c).has_table(facts_table.name)):
                await engine.dispose()
                raise NoDirectory(
                    "the group directory (SINK_DIRECTORY_URL) has no table yet: "
                    "no worker with callback_sink.handlers.directory has run against it"
                )
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def apply(
        self,
        group_id: str,
        facts: Sequence[Fact],
        *,
        timestamp: int,
        call_id: str,
        conn: AsyncConnection | None = None,
    ) -> int:
        """Store ``facts`` as stated by the event (``timestamp``, ``call_id``); each replaces
        the stored fact of its key only if that one comes from an older event. Returns how
        many rows changed. ``conn``: a transaction of this database to write in (the inbox's,
        committed by its owner); without it the write is a transaction of its own."""
        by_key = {fact.key: fact for fact in facts}  # one row per key and statement
        if not by_key:
            return 0
        rows = [
            {
                "group_id": group_id,
                "kind": fact.kind,
                "subject": fact.subject,
                "present": fact.present,
                "value": None if fact.value is None else orjson.dumps(fact.value).decode(),
                "ts": timestamp,
                "call_id": call_id,
            }
            for _, fact in sorted(by_key.items())  # a fixed lock order: no deadlocks
        ]
        insert = self._insert(facts_table).values(rows)
        new, old = insert.excluded, facts_table.c
        statement = insert.on_conflict_do_update(
            index_elements=[old.group_id, old.kind, old.subject],
            set_={"present": new.present, "value": new.value, "ts": new.ts,
                  "call_id": new.call_id},
            where=sa.or_(old.ts < new.ts, sa.and_(old.ts == new.ts, old.call_id < new.call_id)),
        )  # fmt: skip
        if conn is not None:
            return max((await conn.execute(statement)).rowcount, 0)
        async with self.engine.begin() as own:
            result = await own.execute(statement)
        return max(result.rowcount, 0)

    async def group(self, group_id: str) -> GroupView | None:
        """One group, or None if no callback ever mentioned it."""
        query = sa.select(facts_table).where(facts_table.c.group_id == group_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return fold(group_id, map(_row, rows)) if rows else None

    async def groups(self) -> list[GroupView]:
        """Every group and chat room, by id."""
        query = sa.select(facts_table).order_by(facts_table.c.group_id)
        views: list[GroupView] = []
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        current: list[Any] = []
        for row in rows:
            if current and current[0].group_id != row.group_id:
                views.append(fold(current[0].group_id, map(_row, current)))
                current = []
            current.append(row)
        if current:
            views.append(fold(current[0].group_id, map(_row, current)))
        return views


@asynccontextmanager
async def open_directory(
    settings: DirectorySettings | None = None, *, create: bool = True
) -> AsyncIterator[Directory]:
    """``async with open_directory() as directory:`` — the directory of ``SINK_DIRECTORY_URL``
    (or of ``settings``), closed on exit; ``create=False`` creates nothing (see ``open``)."""
    directory = await Directory.open(settings or DirectorySettings.from_env(), create=create)
    try:
        yield directory
    finally:
        await directory.close()


def _row(row: Any) -> Row:
    value = None if row.value is None else orjson.loads(row.value)
    return Row(row.kind, row.subject, bool(row.present), value, int(row.ts))


def _sqlite_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
