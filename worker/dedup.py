"""Per-handler deduplication: an atomic claim with a lease, then a "done" mark with a TTL.

A callback is identified by its dedup key (callId, or callId + ``to`` for offline messages)
and each handler keeps its own mark, so a redelivery re-runs only the handlers that have not
succeeded. Two stores share one interface: :class:`MemoryStore` (one process) and
:class:`RedisStore` (any number of workers).
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sink.errors import DedupUnavailable

DONE = "done"
#: The memory store sweeps expired marks after this many writes.
SWEEP_EVERY = 1024


class State(enum.Enum):
    CLAIMED = "claimed"  # this worker may run the handler now
    DONE = "done"  # the handler already succeeded for this callback
    BUSY = "busy"  # another worker holds a live lease: try again later


@dataclass(frozen=True)
class Claim:
    state: State
    token: str = ""


class DedupStore(Protocol):
    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        """Atomically take the right to run ``handler`` for callback ``key``."""

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> None:
        """Record that ``handler`` succeeded; later claims answer DONE for ``ttl`` seconds."""

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        """Give the claim back after a failure so that a retry can claim it again."""

    async def ping(self) -> None:
        """Raise :class:`DedupUnavailable` when the store cannot be reached."""

    async def close(self) -> None: ...


class MemoryStore:
    """Dedup marks in this process's memory: the default, for one worker process."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], tuple[str, float]] = {}
        self._writes = 0

    def _set(self, slot: tuple[str, str], value: str, ttl: float) -> None:
        self._marks.pop(slot, None)  # re-insert at the end: the dict stays ~ in expiry order
        self._marks[slot] = (value, time.monotonic() + ttl)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        """Forget expired marks from the front, stopping at the first live one: callIds never
        come back to expire their own marks. Done marks share one TTL, so they expire in
        insertion order; a live lease at the front only delays the sweep a little."""
        now = time.monotonic()
        for slot, (_, expires) in list(self._marks.items()):
            if expires > now:
                break
            del self._marks[slot]

    def _live(self, slot: tuple[str, str]) -> str | None:
        mark = self._marks.get(slot)
        if mark is None:
            return None
        if mark[1] <= time.monotonic():
            del self._marks[slot]
            return None
        return mark[0]

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        slot = (key, handler)
        value = self._live(slot)
        if value == DONE:
            return Claim(State.DONE)
        if value is not None:
            return Claim(State.BUSY)
        token = uuid.uuid4().hex
        self._set(slot, token, lease)
        return Claim(State.CLAIMED, token)

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> None:
        self._set((key, handler), DONE, ttl)

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        if self._live((key, handler)) == claim.token:
            del self._marks[(key, handler)]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._marks.clear()


# Mark done / release only while we still hold the lease we took: a worker whose lease
# expired must not overwrite another worker's newer claim.
_DONE_IF_OWNER = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Dedup marks in Redis, shared by every worker: ``SET NX PX`` claims, Lua settles."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        self._prefix = prefix
        self._done = self._redis.register_script(_DONE_IF_OWNER)
        self._release = self._redis.register_script(_RELEASE_IF_OWNER)

    def _key(self, key: str, handler: str) -> str:
        return f"{self._prefix}:dedup:{handler}:{key}"

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        token = uuid.uuid4().hex
        rkey = self._key(key, handler)
        try:
            if await self._redis.set(rkey, token, nx=True, px=max(1, int(lease * 1000))):
                return Claim(State.CLAIMED, token)
            value = await self._redis.get(rkey)
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        if value == DONE.encode():
            return Claim(State.DONE)
        if value is None:  # the lease expired between SET and GET: try once more
            return await self.claim(key, handler, lease)
        return Claim(State.BUSY)

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> None:
        try:
            await self._done(keys=[self._key(key, handler)], args=[claim.token, int(ttl * 1000)])
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        try:
            await self._release(keys=[self._key(key, handler)], args=[claim.token])
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def purge(self) -> int:
        """Delete every mark under this store's prefix (tests clean up with it)."""
        removed = 0
        async for key in self._redis.scan_iter(f"{self._prefix}:dedup:*", count=1000):
            removed += await self._redis.delete(key)
        return removed

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


def open_store(url: str, prefix: str) -> DedupStore:
    """The store named by ``SINK_DEDUP_URL``."""
    if url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, prefix)
