"""The dedup store in Redis, shared by every worker: one Lua script claims every handler of a
callback (and binds its callId to its kind, and counts its runs) in one round trip; done
marks and releases check that the lease is still ours."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.dedup import DONE, Claim, ClaimRequest, Claims, State
from callback_sink.worker.redis_batch import ScriptBatcher

# Mark done / release only while we still hold the lease we took (the token is the fence):
# a worker whose lease expired must not overwrite another worker's newer claim. A lapsed
# lease nobody took over is still marked (2): the run is the only one, and unmarked it would
# run again. 0: another worker holds or settled it, our run was a duplicate.
_DONE_IF_OWNER = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] or v == false then
  redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
  if v == false then return 2 end
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
# KEYS: marks; ARGV: lease ms, then the token of each mark. Extends only the leases still
# ours; returns 1 for each extended, 0 for each lost.
_RENEW_IF_OWNER = """
local out = {}
for i = 1, #KEYS do
  out[i] = 0
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    out[i] = 1
  end
end
return out
"""
#: The probe key :meth:`RedisStore.ping` writes lives this long, milliseconds.
PROBE_TTL_MS = 10_000
_STATES = {b"claimed": State.CLAIMED, b"done": State.DONE, b"busy": State.BUSY}


class RedisStore:
    """Dedup marks in Redis, shared by every worker: ``SET NX PX`` claims, Lua settles."""

    kind = "redis"
    single_consumer = False

    def __init__(self, url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10
        )
        self._prefix = prefix
        self._done = self._redis.register_script(_DONE_IF_OWNER)
        self._release = self._redis.register_script(_RELEASE_IF_OWNER)
        self._claim_all = self._redis.register_script(_CLAIM_ALL)
        self._renew = self._redis.register_script(_RENEW_IF_OWNER)
        self._batch = ScriptBatcher(self._redis)

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

    async def claim_all(self, ask: ClaimRequest) -> Claims:
        token = uuid.uuid4().hex
        keys = [
            f"{self._prefix}:kind:{ask.call_id}",
            f"{self._prefix}:runs:{ask.key}",
            *(self._key(ask.key, h) for h in ask.handlers),
        ]
        args: list[str | int] = [
            ask.kind, token, _ms(ask.lease), _ms(ask.bind_ttl), ask.max_runs
        ]  # fmt: skip
        try:
            reply = await self._batch.call(self._claim_all, keys, args)
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        bound = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        runs = int(reply[1])
        if bound != ask.kind or runs > ask.max_runs:
            return Claims(bound, (), runs)
        claims = tuple(
            Claim(_STATES[state], token if state == b"claimed" else "") for state in reply[2:]
        )
        return Claims(bound, claims, runs)

    async def renew(
        self, held: Sequence[tuple[tuple[str, str], Claim]], lease: float
    ) -> list[bool]:
        if not held:
            return []
        keys = [self._key(key, handler) for (key, handler), _ in held]
        args: list[str | int] = [_ms(lease), *(claim.token for _, claim in held)]
        try:
            extended = await self._renew(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        return [bool(int(flag)) for flag in extended]

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> bool:
        try:
            keys, args = [self._key(key, handler)], [claim.token, _ms(ttl)]
            return bool(int(await self._batch.call(self._done, keys, args)))
        except (RedisError, OSError) as exc:
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
        """A write, not PING: a Redis full at ``maxmemory`` answers PING but refuses writes."""
        try:
            await self._redis.set(f"{self._prefix}:probe", b"1", px=PROBE_TTL_MS)
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def config(self, *names: str) -> dict[str, str] | None:
        """``CONFIG GET`` of ``names``; None where CONFIG is refused (a managed Redis)."""
        try:
            found = await self._redis.config_get(*names)
        except ResponseError:
            return None
        except (RedisError, OSError) as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        return {_text(k): _text(v) for k, v in found.items()}

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
