"""A gate that lets a suspect delivery run alone.

A message the broker redelivers (``redelivered``: its last delivery ended without a settle)
may be the one that killed the previous worker. Running it while other callbacks are in
flight would take those down with it again, and their runs would count toward their own
delivery budgets; so it waits for the running ones to finish, runs alone, and the others
wait for it. Ordinary deliveries pass the gate with no await at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Gate:
    def __init__(self) -> None:
        self._shared = 0
        self._open = asyncio.Event()  # no suspect is running or waiting to run
        self._open.set()
        self._idle = asyncio.Event()  # no ordinary delivery is running
        self._idle.set()
        self._suspects = asyncio.Lock()

    async def enter(self) -> None:
        """An ordinary delivery starts (pair it with :meth:`leave`)."""
        while not self._open.is_set():
            await self._open.wait()
        self._shared += 1
        self._idle.clear()

    def leave(self) -> None:
        self._shared -= 1
        if self._shared == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """A suspect delivery runs with nothing else in flight."""
        async with self._suspects:
            self._open.clear()
            try:
                await self._idle.wait()
                yield
            finally:
                self._open.set()
