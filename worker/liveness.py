"""One liveness key per worker process: while it exists, the worker is alive.

A worker's id (:attr:`Liveness.worker`, random per process) leads every claim token it takes,
and its key (``<prefix>:live:<worker-id>`` in Redis) lives ``SINK_LIVENESS_TTL`` seconds
(by default ``SINK_CLAIM_LEASE``: judging a worker dead takes no less than its leases would
lapse in, so a stalled event loop is no likelier to cost a double run than before), renewed
every third of that. Another worker that finds a claim of it busy reads that key
(:mod:`~worker.crashloop`): gone means the process is gone, and its claims are taken over at
once instead of waiting out their leases behind growing backoff; a lone run it left behind
counts as a death of that callback.

The key is set before the worker's first claim (:meth:`Liveness.ensure`), so nobody sees a
claim of a worker not known alive yet, and removed when the worker stops (:meth:`close`).
What the worker can prove: a renewal asked for at ``t`` and granted keeps the key at least
until ``t + ttl`` on our clock (:attr:`until`); :meth:`Leases.fresh
<worker.leases.Leases.fresh>` starts a handler only while that, as well as the claim's own
lease, leaves a round trip of margin: past it another worker may take the claim over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from typing import TYPE_CHECKING

from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.dedup import DedupStore

if TYPE_CHECKING:
    from callback_sink.sink.settings import Settings

log = logs.get("worker")

#: Renewals per TTL: one lost renewal leaves the key alive.
RENEWALS_PER_TTL = 3


class Liveness:
    """The liveness key of one worker process; ``ttl`` 0 keeps none (:meth:`off`)."""

    def __init__(self, store: DedupStore, ttl: float, worker: str = "") -> None:
        self.store = store
        self.ttl = ttl
        #: This process's id: short, no dot (a claim token is ``<worker>.<random>``); "" when
        #: off: its tokens then name no worker, and nobody takes its claims over early.
        self.worker = "" if not ttl else worker or uuid.uuid4().hex[:12]
        #: Until when (``time.monotonic()``) the key is known to exist; 0 before the first.
        self.until = 0.0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def ensure(self) -> None:
        """Set the key now unless it is kept already, and keep it from then on."""
        if not self.worker:
            return
        if self._task is None or self._task.done():
            await self._beat()
            if self._closed:
                return
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    def remaining(self) -> float:
        """Seconds the key is known to live on; infinite when liveness is not in use."""
        if not self.worker:
            return math.inf
        return self.until - time.monotonic()

    async def _beat(self) -> None:
        asked_at = time.monotonic()
        await self.store.alive(self.worker, self.ttl)
        self.until = max(self.until, asked_at + self.ttl)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / RENEWALS_PER_TTL)
            try:
                await self._beat()
            except DedupUnavailable as exc:
                log.warning("dedup.liveness_failed", worker=self.worker, error=str(exc))

    @classmethod
    def of(cls, store: DedupStore, settings: Settings) -> Liveness:
        """A worker's key: ``SINK_LIVENESS_TTL``, by default ``SINK_CLAIM_LEASE`` (a worker is
        then judged dead no sooner than its claims would lapse on their own anyway)."""
        return cls(store, settings.liveness_ttl or settings.claim_lease)

    @classmethod
    def off(cls, store: DedupStore) -> Liveness:
        """No liveness key (a :class:`~worker.leases.Leases` built without one)."""
        return cls(store, 0.0)

    async def close(self) -> None:
        """Stop renewing and remove the key: a stopped worker holds no claim."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.until:
            with contextlib.suppress(DedupUnavailable):
                await self.store.gone(self.worker)
