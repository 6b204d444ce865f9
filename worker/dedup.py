"""Per-handler deduplication: an atomic claim with a lease, then a "done" mark with a TTL.

A callback is identified by its dedup key (callId, or callId + ``to`` for offline messages)
and each handler keeps its own mark, so a redelivery re-runs only the handlers that have not
succeeded. Two stores share one interface: :class:`MemoryStore` (one process) and
:class:`RedisStore` (any number of workers).

:meth:`DedupStore.claim_all` takes every handler's claim of one callback in one round trip and
binds the ``callId`` to the kind of event it first arrived as: Easemob's signature covers only
``callId`` and ``timestamp``, so a captured callback replayed with another ``eventType`` or
``payload`` is told apart here (the bound kind differs) and refused as forged. A claim is a
short lease that the running worker renews (:meth:`DedupStore.renew`), so a worker killed
mid-handler hands its callbacks over within one lease.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sink.errors import DedupUnavailable

DONE = "done"
#: The slot under which a callId's first kind is kept (no handler has this name).
KIND_SLOT = "\x00kind"
#: The slot counting the deliveries of a callback that started handlers.
RUNS_SLOT = "\x00runs"
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


@dataclass(frozen=True)
class Claims:
    """What :meth:`DedupStore.claim_all` found: the kind the callId is bound to, how many
    deliveries of this callback have started handlers (this one included, if it claimed
    any), and (only when the kind is the one asked for and ``runs`` is within the budget)
    one claim per handler, in order."""

    bound_kind: str
    claims: tuple[Claim, ...] = ()
    runs: int = 0

    def over_budget(self, max_runs: int) -> bool:
        return self.runs > max_runs


class DedupStore(Protocol):
    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        """Atomically take the right to run ``handler`` for callback ``key``."""

    async def claim_all(
        self,
        key: str,
        call_id: str,
        kind: str,
        handlers: Sequence[str],
        lease: float,
        bind_ttl: float,
        max_runs: int,
    ) -> Claims:
        """Bind ``call_id`` to ``kind`` unless already bound; if bound to ``kind``, claim every
        free handler of callback ``key`` at once (one token for all) and count one more run
        when any was free, unless that run would be past ``max_runs``: then claim none."""

    async def renew(self, key: str, claims: Mapping[str, Claim], lease: float) -> None:
        """Extend the leases of claims still held (a no-op for claims lost or settled)."""

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

    async def claim_all(
        self,
        key: str,
        call_id: str,
        kind: str,
        handlers: Sequence[str],
        lease: float,
        bind_ttl: float,
        max_runs: int,
    ) -> Claims:
        bind = (call_id, KIND_SLOT)
        bound = self._live(bind)
        if bound is None:
            self._set(bind, kind, bind_ttl)
            bound = kind
        if bound != kind:
            return Claims(bound)
        states = [self._live((key, h)) for h in handlers]
        runs = int(self._live((key, RUNS_SLOT)) or 0)
        if any(value is None for value in states):
            runs += 1
            if runs > max_runs:
                return Claims(bound, (), runs)
            self._set((key, RUNS_SLOT), str(runs), bind_ttl)
        token = uuid.uuid4().hex
        claims = []
        for handler, value in zip(handlers, states, strict=True):
            if value == DONE:
                claims.append(Claim(State.DONE))
            elif value is not None:
                claims.append(Claim(State.BUSY))
            else:
                self._set((key, handler), token, lease)
                claims.append(Claim(State.CLAIMED, token))
        return Claims(bound, tuple(claims), runs)

    async def renew(self, key: str, claims: Mapping[str, Claim], lease: float) -> None:
        for handler, claim in claims.items():
            if self._live((key, handler)) == claim.token:
                self._set((key, handler), claim.token, lease)

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
# KEYS[1]: the callId's kind binding; KEYS[2]: the callback's run counter; KEYS[3..]: one
# mark per handler. ARGV: kind, token, lease ms, binding TTL ms, max runs.
# Returns {bound kind, runs, state of each handler} (no states: forged or over budget).
_CLAIM_ALL = """
local bound = redis.call('GET', KEYS[1])
if not bound then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
  bound = ARGV[1]
end
if bound ~= ARGV[1] then return {bound, 0} end
local values = {}
local free = false
for i = 3, #KEYS do
  values[i] = redis.call('GET', KEYS[i])
  if not values[i] then free = true end
end
local runs = tonumber(redis.call('GET', KEYS[2]) or '0')
if free then
  runs = runs + 1
  if runs > tonumber(ARGV[5]) then return {bound, runs} end
  redis.call('SET', KEYS[2], runs, 'PX', ARGV[4])
end
local out = {bound, runs}
for i = 3, #KEYS do
  if not values[i] then
    redis.call('SET', KEYS[i], ARGV[2], 'PX', ARGV[3])
    out[i] = 'claimed'
  elseif values[i] == 'done' then
    out[i] = 'done'
  else
    out[i] = 'busy'
  end
end
return out
"""
# KEYS: marks; ARGV: token, lease ms. Extends only the leases still ours.
_RENEW_IF_OWNER = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 0
"""
_STATES = {b"claimed": State.CLAIMED, b"done": State.DONE, b"busy": State.BUSY}


class RedisStore:
    """Dedup marks in Redis, shared by every worker: ``SET NX PX`` claims, Lua settles."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        self._prefix = prefix
        self._done = self._redis.register_script(_DONE_IF_OWNER)
        self._release = self._redis.register_script(_RELEASE_IF_OWNER)
        self._claim_all = self._redis.register_script(_CLAIM_ALL)
        self._renew = self._redis.register_script(_RENEW_IF_OWNER)

    def _key(self, key: str, handler: str) -> str:
        return f"{self._prefix}:dedup:{handler}:{key}"

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        token = uuid.uuid4().hex
        rkey = self._key(key, handler)
        try:
            if await self._redis.set(rkey, token, nx=True, px=_ms(lease)):
                return Claim(State.CLAIMED, token)
            value = await self._redis.get(rkey)
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        if value == DONE.encode():
            return Claim(State.DONE)
        if value is None:  # the lease expired between SET and GET: try once more
            return await self.claim(key, handler, lease)
        return Claim(State.BUSY)

    async def claim_all(
        self,
        key: str,
        call_id: str,
        kind: str,
        handlers: Sequence[str],
        lease: float,
        bind_ttl: float,
        max_runs: int,
    ) -> Claims:
        token = uuid.uuid4().hex
        keys = [
            f"{self._prefix}:kind:{call_id}",
            f"{self._prefix}:runs:{key}",
            *(self._key(key, h) for h in handlers),
        ]
        args: list[str | int] = [kind, token, _ms(lease), _ms(bind_ttl), max_runs]
        try:
            reply = await self._claim_all(keys=keys, args=args)
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        bound = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        runs = int(reply[1])
        if bound != kind or runs > max_runs:
            return Claims(bound, (), runs)
        claims = tuple(
            Claim(_STATES[state], token if state == b"claimed" else "") for state in reply[2:]
        )
        return Claims(bound, claims, runs)

    async def renew(self, key: str, claims: Mapping[str, Claim], lease: float) -> None:
        by_token: dict[str, list[str]] = {}
        for handler, claim in claims.items():
            by_token.setdefault(claim.token, []).append(self._key(key, handler))
        try:
            for token, keys in by_token.items():
                await self._renew(keys=keys, args=[token, _ms(lease)])
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

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
        for pattern in (f"{self._prefix}:{part}:*" for part in ("dedup", "kind", "runs")):
            async for key in self._redis.scan_iter(pattern, count=1000):
                removed += await self._redis.delete(key)
        return removed

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def open_store(url: str, prefix: str) -> DedupStore:
    """The store named by ``SINK_DEDUP_URL``."""
    if url.startswith("memory://"):
        return MemoryStore()
    return RedisStore(url, prefix)
