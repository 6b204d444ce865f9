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
        self._exclusive = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        if self._exclusive:
            async with self._changed:
                await self._changed.wait_for(lambda: not self._exclusive)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            if self._shared == 0 and self._exclusive:  # a suspect waits for us
                await self._notify()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            await self._changed.wait_for(lambda: self._shared == 0)
        try:
            yield
        finally:
            self._exclusive = False
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()
