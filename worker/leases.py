"""The claims a worker holds, renewed together.

A claim is a short lease (``SINK_CLAIM_LEASE``) so that a worker that died hands its callbacks
over within seconds; a live worker therefore renews the leases of the handlers it runs. One
background task per worker renews every held lease in one dedup-store call, a few times per
lease, instead of a timer per callback.
"""

from __future__ import annotations

import asyncio
import contextlib

from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.dedup import Claim, DedupStore

log = logs.get("worker")

#: How many times per lease the held claims are renewed: a lost renewal or two is harmless.
RENEWALS_PER_LEASE = 3


class Leases:
    def __init__(self, store: DedupStore, lease: float) -> None:
        self.store = store
        self.lease = lease
        self._held: dict[tuple[str, str], Claim] = {}
        self._task: asyncio.Task[None] | None = None

    def hold(self, key: str, handler: str, claim: Claim) -> None:
        self._held[(key, handler)] = claim
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    def drop(self, key: str, handler: str) -> None:
        self._held.pop((key, handler), None)

    def __len__(self) -> int:
        return len(self._held)

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self.lease / RENEWALS_PER_LEASE)
            if not self._held:
                break
            try:
                await self.store.renew(list(self._held.items()), self.lease)
            except DedupUnavailable as exc:
                log.warning("dedup.renew_failed", held=len(self._held), error=str(exc))

    async def close(self) -> None:
        self._held.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
