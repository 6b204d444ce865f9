"""The worker's side of transactional handlers: the inbox of ``SINK_INBOX_URL``, and the call.

A handler declared ``@on(..., transactional=True)`` runs as::

    claim (Redis) → BEGIN; insert its inbox row; handler(event, tx); COMMIT → done mark (Redis)

The Redis claim still keeps two workers from running it at once; the inbox row is the
authority on "done". Its insert finding the row (:class:`~sink.errors.InboxDuplicate`) is the
``duplicate`` outcome; the database away (:class:`~sink.errors.InboxUnavailable`) defers the
callback, nothing committed; any other failure rolls back the handler's writes with its row
and is retried like any handler's (:mod:`worker.decide`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from sqlalchemy.ext.asyncio import create_async_engine

from callback_sink.handlers.registry import Handler, Registry
from callback_sink.handlers.transactional import Inbox, TransactionalFunc
from callback_sink.sink.errors import ConfigError, InboxUnavailable, StartupError
from callback_sink.sink.events import Event
from callback_sink.sink.settings import Settings

#: Connections of the inbox pool, at most (fewer when SINK_CONCURRENCY is lower): a
#: transactional handler holds one for its whole run.
POOL_MAX = 20
#: What the worker's start-up loop retries besides its own errors: the database away.
RETRIED = (InboxUnavailable,)
#: How long a handler waits for a free pooled connection before failing, seconds.
POOL_TIMEOUT = 30.0


def transactional_names(registry: Registry) -> list[str]:
    return [h.name for h in registry.handlers if h.options.transactional]


def inbox_of(settings: Settings, registry: Registry) -> Inbox | None:
    """The inbox the registry's transactional handlers run in; None when it has none. Raises
    :class:`ConfigError` naming them when ``SINK_INBOX_URL`` is not set."""
    names = transactional_names(registry)
    if not names:
        return None
    if not settings.inbox_url:
        raise ConfigError(
            f"SINK_INBOX_URL is not set, but {', '.join(names)} "
            f"{'is an' if len(names) == 1 else 'are'} @on(transactional=True) handler"
            f"{'' if len(names) == 1 else 's'}: set it to the PostgreSQL database "
            "their writes go to (postgresql://user:password@host/db)"
        )
    _, _, rest = settings.inbox_url.partition("://")
    size = max(1, min(settings.concurrency, POOL_MAX))
    engine = create_async_engine(
        f"postgresql+asyncpg://{rest}",
        pool_size=size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT,
        pool_pre_ping=True,  # a connection left over from before a database restart is dropped
    )
    return Inbox(engine, settings.inbox_table, settings.dedup_ttl)


def call(handler: Handler, event: Event, inbox: Inbox | None) -> Awaitable[None]:
    """Run ``handler`` for ``event``: a plain one with the event, a transactional one inside
    its inbox transaction (the worker checked at start-up that there is an inbox)."""
    if not handler.options.transactional:
        return handler.func(event)
    if inbox is None:
        raise ConfigError(f"SINK_INBOX_URL is not set: {handler.name} is transactional")
    return _in_transaction(handler, event, inbox)


async def _in_transaction(handler: Handler, event: Event, inbox: Inbox) -> None:
    func = cast(TransactionalFunc, handler.func)
    async with inbox.transaction(handler.name, event.dedup_key) as tx:
        await func(event, tx)


async def close(inbox: Inbox | None) -> None:
    """Stop the pruning and close the pool."""
    if inbox is not None:
        await inbox.close()
        await inbox.engine.dispose()


async def start(inbox: Inbox) -> None:
    """Create and prune the inbox table at start-up: :class:`InboxUnavailable` (retried by the
    worker's start-up loop) while the database is away, :class:`StartupError` naming
    ``SINK_INBOX_URL`` for what waiting cannot fix (a refused login, no such database)."""
    try:
        await inbox.start()
    except InboxUnavailable:
        raise
    except Exception as exc:
        raise StartupError(
            f"SINK_INBOX_URL: cannot open the inbox table {inbox.table}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


async def start_with(
    inbox: Inbox | None, retrying: Callable[..., Awaitable[Any]], patience: float
) -> None:
    """At worker start-up: :func:`start` the inbox, if there is one, through the worker's
    ``retrying(what, attempt, patience)`` loop (:func:`worker.consumer.with_retries`)."""
    if inbox is not None:
        await retrying("PostgreSQL (SINK_INBOX_URL)", lambda: start(inbox), patience)
