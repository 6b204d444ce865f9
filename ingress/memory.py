"""Giving memory back after a burst.

Request bodies are read in bounded chunks, but glibc's allocator keeps the heap pages it
served them from: after a flood of slow senders the process stays at its peak. A background
task asks it to return free pages (``malloc_trim``) now and then; it costs about a
millisecond, and nothing where the C library does not have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections.abc import AsyncIterator, Callable

from aiohttp import web

#: How often free heap pages are handed back to the system, seconds.
TRIM_INTERVAL = 10.0


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


async def trim_memory(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` of the ingress: trim the heap every :data:`TRIM_INTERVAL` seconds."""
    trim = _malloc_trim()

    async def loop() -> None:
        while trim is not None:
            await asyncio.sleep(TRIM_INTERVAL)
            trim()

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
