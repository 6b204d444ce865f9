"""Built-in handler: a directory of groups and chat rooms kept in sync by callbacks.

Off by default; enable it by adding ``callback_sink.handlers.directory`` to
``SINK_HANDLERS``. It keeps,
per group: owner, admins, members, mutes with their expiry, block and allow lists,
whole-group mute, chat room or not, destroyed or not, and the spec's model fields. Storage
is ``SINK_DIRECTORY_URL`` (SQLite by default, PostgreSQL for several workers).

Reading it from code::

    from callback_sink.handlers.directory import open_directory

    async with open_directory() as directory:
        group = await directory.group("173556296122369")
        if group and "alice" in group.members: ...
"""

from __future__ import annotations

import asyncio

from callback_sink.easemob.settings import EasemobSettings
from callback_sink.handlers.directory.facts import Fact
from callback_sink.handlers.directory.settings import DirectorySettings
from callback_sink.handlers.directory.store import Directory, open_directory
from callback_sink.handlers.directory.tracker import HANDLER, Tracker
from callback_sink.handlers.directory.view import GroupView, MutedMember
from callback_sink.handlers.registry import on, on_shutdown, on_startup
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.events import Event

__all__ = [
    "Directory",
    "DirectorySettings",
    "Fact",
    "GroupView",
    "MutedMember",
    "Tracker",
    "close",
    "open_directory",
    "startup",
    "track_groups",
    "tracker",
]

# The handler API hands handlers only the event, so the store is opened by the start-up hook
# (or on first use, outside a worker) and kept for the life of the event loop that opened it.
_opened: tuple[asyncio.AbstractEventLoop, asyncio.Task[Tracker]] | None = None

#: How long the start-up hook waits for the directory's database, seconds.
OPEN_TIMEOUT = 10.0


async def tracker() -> Tracker:
    """The process's tracker, opened from the environment on first use."""
    global _opened
    loop = asyncio.get_running_loop()
    if _opened is None or _opened[0] is not loop:
        opening = Tracker.open(DirectorySettings.from_env(), EasemobSettings.from_env())
        _opened = (loop, loop.create_task(opening))
    task = _opened[1]
    try:
        return await asyncio.shield(task)
    except Exception:
        if _opened is not None and _opened[1] is task:
            _opened = None  # let the next callback try again
        raise


@on_startup
async def startup() -> None:
    """Open and check the directory's database and REST settings before the first callback:
    a wrong ``SINK_DIRECTORY_URL`` stops the worker at start-up with one line, instead of
    failing (and dead-lettering) every callback."""
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            await tracker()
    except ConfigError:
        raise
    except TimeoutError:
        raise ConfigError(
            f"SINK_DIRECTORY_URL: the database did not answer within {OPEN_TIMEOUT:g}s"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"SINK_DIRECTORY_URL: cannot open the directory: {type(exc).__name__}: {exc}"
        ) from None


@on_shutdown
async def close() -> None:
    """Close the tracker opened by :func:`tracker` (at shutdown, or between tests)."""
    global _opened
    if _opened is None:
        return
    loop, task = _opened
    _opened = None
    if loop is asyncio.get_running_loop() and not (task.done() and task.exception()):
        await (await task).close()


@on("muc", "group_op", name=HANDLER)
async def track_groups(event: Event) -> None:
    """Keep the directory in step with one group or chat-room callback. On PostgreSQL its
    facts commit together with its inbox row (:mod:`callback_sink.handlers.transactional`):
    a worker killed mid-callback neither loses them nor applies them twice."""
    await (await tracker()).record(event)
