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
        self._generation = 0  # bumped by release_all: older tickets no longer count

    async def enter(self) -> int:
        """An ordinary delivery starts; pass what this returns to :meth:`leave`."""
        while not self._open.is_set():
            await self._open.wait()
        self._shared += 1
        self._idle.clear()
        return self._generation

    def leave(self, ticket: int) -> None:
        if ticket != self._generation:
            return  # let go by :meth:`release_all` already
        self._shared -= 1
        if self._shared == 0:
            self._idle.set()

    def release_all(self) -> None:
        """The channel the running deliveries came on is gone, so the broker redelivers them:
        they stop counting as in flight, and their copies (suspects) need not wait for them."""
        self._generation += 1
        self._shared = 0
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
