"""The inbox: a handler's done mark committed in the same PostgreSQL transaction as its writes.

A worker killed between a handler's side effect and its Redis done mark runs the handler
again after the redelivery. For writes to a database that hole closes when the done mark is
a row of that database written in the handler's own transaction (the inbox pattern)::

    BEGIN
    INSERT INTO callback_sink_inbox (handler, dedup_key) ... ON CONFLICT DO NOTHING
    -- no row inserted: an earlier delivery committed it → InboxDuplicate, nothing runs
    ... the handler's own statements, on the same connection ...
    COMMIT

A crash before ``COMMIT`` rolls back both (the callback runs again, nothing was written);
after it, both are there and the redelivery finds the row. Two deliveries at once (a
lapsed claim taken over) cannot both commit: the second insert waits on the first's
uncommitted row, then inserts nothing.

SQLAlchemy Core (asyncio, asyncpg) rather than bare asyncpg: the group directory already
writes through it, so a transactional handler gets the same :data:`Transaction` (an
``AsyncConnection``) whether it runs raw SQL (``sa.text``) or Core statements.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callback_sink.sink import logs
from callback_sink.sink.errors import InboxDuplicate, InboxUnavailable
from callback_sink.sink.events import Event

#: What a transactional handler receives besides the event: the open transaction's
#: connection. Its statements commit together with the handler's inbox row.
Transaction = AsyncConnection
#: An ``@on(..., transactional=True)`` handler: ``async def h(event, tx) -> None``.
TransactionalFunc = Callable[[Event, Transaction], Awaitable[None]]

#: How often a worker deletes the inbox rows older than SINK_DEDUP_TTL, seconds.
PRUNE_EVERY = 3600.0
#: SQLSTATE classes and codes that mean "the database went away", not "the statement is
#: wrong": 08 connection exceptions; 57P01-57P03 shut down / crashed / still starting;
#: 53300 too many connections.
UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")

log = logs.get("handlers.inbox")


def inbox_table(name: str) -> sa.Table:
    """The inbox table ``name`` (``table`` or ``schema.table``): one row per handler and
    callback done, kept until pruned."""
    schema, _, table = name.rpartition(".")
    return sa.Table(
        table,
        sa.MetaData(),
        sa.Column("handler", sa.Text, primary_key=True),
        sa.Column("dedup_key", sa.Text, primary_key=True),
        sa.Column(
            "done_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
            index=True,
        ),
        schema=schema or None,
    )


class Inbox:
    """The inbox table on one engine: :meth:`start` creates and prunes it, :meth:`transaction`
    opens a handler's transaction with its row inserted, :meth:`close` stops the pruning."""

    def __init__(self, engine: AsyncEngine, table: str, ttl: float) -> None:
        self.engine = engine
        self.table = inbox_table(table)
        #: Rows older than this many seconds are deleted (``SINK_DEDUP_TTL``).
        self.ttl = ttl
        self._pruning: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Create the table if needed and delete old rows; then prune every hour. Raises
        :class:`InboxUnavailable` when the database cannot be reached."""
        lock = zlib.crc32(str(self.table).encode())  # one creator at a time among workers
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
                await conn.run_sync(self.table.metadata.create_all)
            await self.prune()
        except Exception as exc:
            if gone(exc) or isinstance(exc, OSError | TimeoutError):
                raise InboxUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise
        if self._pruning is None:
            self._pruning = asyncio.create_task(self._prune_hourly())

    async def close(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruning
            self._pruning = None

    async def prune(self) -> int:
        """Delete the rows older than the TTL; how many went."""
        cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, self.ttl)
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(self.table).where(self.table.c.done_at < cutoff))
        deleted = max(result.rowcount, 0)
        log.info("inbox.pruned", table=str(self.table), deleted=deleted, ttl_s=self.ttl)
        return deleted

    async def _prune_hourly(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                await self.prune()
            except Exception as exc:  # the next hour tries again; rows only wait longer
                log.warning("inbox.prune_failed", error_type=type(exc).__name__, error=str(exc))

    async def done(self, handler: str, key: str) -> bool:
        """Whether ``handler``'s row for ``key`` is committed (for tools and tests)."""
        c = self.table.c
        query = sa.select(sa.func.count()).where(c.handler == handler, c.dedup_key == key)
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar())

    @asynccontextmanager
    async def transaction(self, handler: str, key: str) -> AsyncIterator[Transaction]:
        """``async with inbox.transaction(name, event.dedup_key) as tx:`` — a transaction
        holding ``handler``'s inbox row for ``key``, committed on a clean exit and rolled
        back (row included) on any exception. Raises :class:`InboxDuplicate` when the row
        was committed before (nothing of the block runs) and :class:`InboxUnavailable`
        when the database is away or drops the connection (nothing is committed, unless
        the commit itself was cut short: then the next delivery finds the row or not). An
        exception of the block that is not the database going away passes unchanged."""
        insert = postgresql.insert(self.table).values(handler=handler, dedup_key=key)
        claim = insert.on_conflict_do_nothing().returning(self.table.c.handler)
        inside = False
        try:
            async with self.engine.begin() as tx:
                if (await tx.execute(claim)).first() is None:
                    raise InboxDuplicate(handler)
                try:
                    yield tx
                except Exception as exc:
                    inside = True
                    if gone(exc):  # the block's own statement found the database away
                        raise self._unavailable(handler, exc) from exc
                    raise
        except (InboxDuplicate, InboxUnavailable):
            raise
        except Exception as exc:  # connecting, the row's insert, the commit or rollback
            if inside or not (gone(exc) or isinstance(exc, OSError | TimeoutError)):
                raise
            raise self._unavailable(handler, exc) from exc

    def _unavailable(self, handler: str, exc: Exception) -> InboxUnavailable:
        log.warning("inbox.unavailable", handler=handler, error_type=type(exc).__name__,
                    error=str(exc))  # fmt: skip
        return InboxUnavailable(f"{type(exc).__name__}: {exc}")


def gone(exc: BaseException) -> bool:
    """Whether a database error ``exc`` (or the driver error it wraps) says the database is
    away or dropped the connection, rather than that a statement failed: worth a deferral,
    not a spent attempt. Other exceptions (a handler's own HTTP error) are not."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.exc.InterfaceError):
            return True
        state = _sqlstate(current)
        if state[:2] == "08" or state in UNAVAILABLE_STATES:
            return True
        current = current.__cause__  # what it explicitly wraps, never what it interrupted
    return False


def _sqlstate(exc: BaseException) -> str:
    found: Any = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return found if isinstance(found, str) else ""
