"""Whether the dedup store keeps the worker's marks: checked at start-up, watched while running.

**At start-up** (:func:`check_at_start`) the worker reads Redis's ``maxmemory-policy`` and
refuses any policy but ``noeviction``. Every other one (``allkeys-*``, ``volatile-*``) may
evict the dedup marks, which all carry a TTL. A re-sent callback would then run twice, and a
captured callback replayed as another kind would run as that kind (its kind binding gone).
With ``noeviction`` a full Redis refuses writes instead, which the worker notices. Where
``CONFIG`` is refused (a managed Redis that renames or forbids it) the policy cannot be
read: ``dedup.eviction_unknown`` warns and the worker starts. Check the provider's setting.
Behind Sentinel the policy read is the current primary's (set the same on every server: a
replica promoted later brings its own); in a Redis Cluster every primary is asked and the
first that may evict decides.

**While running** (:class:`StoreHealth`) a delivery that finds the store away (unreachable,
or refusing writes: OOM at ``maxmemory``) pauses consuming until a probe write succeeds (in a
Cluster: one write to every primary, so a primary that died pauses the worker until its
replica took over; behind Sentinel: to the primary the sentinels name now).
``/readyz`` is 503 meanwhile, since the worker does not consume and the probe, a write,
fails. The log says each change of state once (``dedup.unavailable``, ``dedup.recovered``)
and, while the store stays away, ``dedup.still_unavailable`` every :data:`SUMMARY_EVERY`
seconds with the failed attempts so far, instead of a line per attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from callback_sink.sink import logs
from callback_sink.sink.errors import DedupUnavailable, StartupError
from callback_sink.worker.dedup import DedupStore

log = logs.get("dedup")

__all__ = ["SAFE_POLICY", "StoreHealth", "check_at_start"]

#: The one ``maxmemory-policy`` that never drops a key with a TTL: a full Redis refuses
#: writes (which the worker sees) instead of forgetting marks (which nobody would see).
SAFE_POLICY = "noeviction"
#: How often a paused worker checks whether the dedup store is back, seconds.
PROBE_INTERVAL = 1.0
#: While the store stays away, one summary line this often, seconds (not one per attempt).
SUMMARY_EVERY = 30.0


async def check_at_start(store: DedupStore) -> None:
    """Ping ``store`` (:class:`DedupUnavailable` while it does not answer), then refuse a Redis
    whose ``maxmemory-policy`` may evict marks with :class:`StartupError`."""
    await store.ping()
    read = getattr(store, "config", None)
    if read is None:  # memory://: nothing to evict
        return
    found: dict[str, str] | None = await read("maxmemory-policy", "maxmemory")
    policy = (found or {}).get("maxmemory-policy")
    if policy is None:
        log.warning(
            "dedup.eviction_unknown",
            reason="CONFIG GET is refused (a managed Redis?): check maxmemory-policy is "
            f"{SAFE_POLICY} by other means",
        )
        return
    if policy != SAFE_POLICY:
        limit = (found or {}).get("maxmemory", "?")
        raise StartupError(
            f"the dedup store (SINK_DEDUP_URL) has maxmemory-policy {policy} (maxmemory "
            f"{limit}): it may evict dedup marks, and a re-sent callback would run twice; "
            f"set maxmemory-policy {SAFE_POLICY} on that Redis"
        )


class StoreHealth:
    """Pauses consuming while the dedup store is away; one line per change of state."""

    def __init__(
        self,
        store: DedupStore,
        pause: Callable[[], Awaitable[None]],
        resume: Callable[[], Awaitable[None]],
        stopping: Callable[[], bool],
    ) -> None:
        #: False from a delivery finding the store away until a probe write succeeds.
        self.available = True
        self._store, self._pause, self._resume, self._stopping = store, pause, resume, stopping
        self._failures = 0  # attempts that failed since the store went away
        self._since = self._summarised = 0.0
        self._task: asyncio.Task[None] | None = None

    def unavailable(self, error: str) -> None:
        """A delivery found the store away: count it and pause consuming (once)."""
        self._failed(error)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._wait_until_back())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    def _failed(self, error: str) -> None:
        now = time.monotonic()
        self._failures += 1
        if self.available:
            self.available = False
            self._since = self._summarised = now
            log.error("dedup.unavailable", error=error)
        elif now - self._summarised >= SUMMARY_EVERY:
            self._summarised = now
            log.warning(
                "dedup.still_unavailable",
                failures=self._failures,
                seconds=round(now - self._since, 1),
                error=error,
            )

    async def _wait_until_back(self) -> None:
        await self._pause()
        while not self._stopping():
            try:
                await self._store.ping()
                break
            except DedupUnavailable as exc:
                self._failed(str(exc))
                await asyncio.sleep(PROBE_INTERVAL)
        if self._stopping():
            return
        seconds = round(time.monotonic() - self._since, 1)
        log.info("dedup.recovered", failures=self._failures, seconds=seconds)
        self.available, self._failures = True, 0
        await self._resume()
