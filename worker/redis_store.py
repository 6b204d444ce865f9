"""The dedup store in Redis, shared by every worker: one Lua script claims every handler of a
callback (and binds its callId to its kind, and counts its runs) in one round trip; done
marks and releases check that the lease is still ours."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from callback_sink.sink.errors import DedupUnavailable
from callback_sink.sink.redis_client import connect, is_cluster
from callback_sink.worker.dedup import DONE, Claim, ClaimRequest, Claims, State, new_token
from callback_sink.worker.redis_batch import ScriptBatcher
from callback_sink.worker.redis_crash import DOWN, CrashRecords
from callback_sink.worker.redis_keys import Keys
from callback_sink.worker.replica_wait import ReplicaWait, WaitReport

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
# mark per handler. ARGV: kind, token, lease ms, binding TTL ms, max runs, count the run (1/0),
# then the tokens of dead workers (their marks count as free: taken over, fenced).
# Returns {bound kind, runs, state of each handler: claimed, done, or the holder's token}
# (no states: forged or over budget).
_CLAIM_ALL = """
local dead = {}
for i = 7, #ARGV do dead[ARGV[i]] = true end
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
  if values[i] and dead[values[i]] then values[i] = false end
  if not values[i] then free = true end
end
local runs = tonumber(redis.call('GET', KEYS[2]) or '0')
if free and ARGV[6] == '1' then
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
    out[i] = values[i]
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
_STATES = {b"claimed": State.CLAIMED, b"done": State.DONE}


class RedisStore(CrashRecords):
    """Dedup marks in Redis, shared by every worker: ``SET NX PX`` claims, Lua settles."""

    kind = "redis"
    single_consumer = False

    def __init__(
        self,
        url: str,
        prefix: str,
        wait: ReplicaWait | None = None,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        """``tls``: :func:`callback_sink.sink.tls.redis_tls_kwargs` of a ``rediss…://`` URL."""
        self._redis = connect(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10,
            **(tls or {}),
        )  # fmt: skip
        self._prefix = prefix
        self._keys = Keys(prefix, is_cluster(url))
        #: The hash tags of the probe keys, one per cluster primary (found at the first ping).
        self._probe_tags: list[str] = []
        self._probe_primaries: set[str] = set()
        self._done = self._redis.register_script(_DONE_IF_OWNER)
        self._release = self._redis.register_script(_RELEASE_IF_OWNER)
        self._claim_all = self._redis.register_script(_CLAIM_ALL)
        self._renew = self._redis.register_script(_RENEW_IF_OWNER)
        self._batch = ScriptBatcher(self._redis)
        waits = WaitReport(wait) if wait is not None and wait.replicas else None
        #: Done marks go through their own batches, which WAIT for replicas when asked to.
        self._settle = ScriptBatcher(self._redis, waits) if waits else self._batch

    def _key(self, key: str, handler: str, tag: str | None = None) -> str:
        """``handler``'s mark of callback ``key``; ``tag`` is the callId (a claim's
        :attr:`Claim.tag`): every key a script touches is built by :class:`Keys`, so that in
        a Redis Cluster they share the callId's hash slot."""
        return self._keys.mark(key, handler, tag)

    async def claim(self, key: str, handler: str, lease: float) -> Claim:
        token = uuid.uuid4().hex
        rkey = self._key(key, handler)
        try:
            if await self._redis.set(rkey, token, nx=True, px=_ms(lease)):
                return Claim(State.CLAIMED, token, key if self._keys.cluster else "")
            value = await self._redis.get(rkey)
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        if value == DONE.encode():
            return Claim(State.DONE)
        if value is None:  # the lease expired between SET and GET: try once more
            return await self.claim(key, handler, lease)
        return Claim(State.BUSY)

    async def claim_all(self, ask: ClaimRequest) -> Claims:
        token = new_token(ask.owner)
        tag = ask.call_id if self._keys.cluster else ""
        keys = [
            self._keys.kind(ask.call_id),
            self._keys.runs(ask.runs_key, ask.call_id),
            *(self._key(ask.key, h, ask.call_id) for h in ask.handlers),
        ]
        args: list[str | int] = [
            ask.kind, token, _ms(ask.lease), _ms(ask.bind_ttl), ask.max_runs,
            int(ask.count_run), *sorted(ask.dead),
        ]  # fmt: skip
        try:
            reply = await self._batch.call(self._claim_all, keys, args)
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        bound = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        runs = int(reply[1])
        if bound != ask.kind or runs > ask.max_runs:
            return Claims(bound, (), runs)
        claims = tuple(_claim_of(state, token, tag) for state in reply[2:])
        return Claims(bound, claims, runs)

    async def renew(
        self, held: Sequence[tuple[tuple[str, str], Claim]], lease: float
    ) -> list[bool]:
        if not held:
            return []
        keys = [self._key(key, handler, claim.tag) for (key, handler), claim in held]
        args: list[str | int] = [_ms(lease), *(claim.token for _, claim in held)]
        try:
            extended = await self._renew(keys=keys, args=args)
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        return [bool(int(flag)) for flag in extended]

    async def done(self, key: str, handler: str, claim: Claim, ttl: float) -> bool:
        try:
            keys, args = [self._key(key, handler, claim.tag)], [claim.token, _ms(ttl)]
            return bool(int(await self._settle.call(self._done, keys, args)))
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def release(self, key: str, handler: str, claim: Claim) -> None:
        try:
            await self._release(keys=[self._key(key, handler, claim.tag)], args=[claim.token])
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def purge(self) -> int:
        """Delete every mark under this store's prefix (tests clean up with it); in a
        Cluster ``SCAN`` visits every primary."""
        removed = 0
        for pattern in self._keys.patterns():
            async for key in self._redis.scan_iter(pattern, count=1000):
                removed += await self._redis.delete(key)
        return removed

    async def ping(self) -> None:
        """A write, not PING: a Redis full at ``maxmemory`` answers PING but refuses writes.
        In a Cluster one write to every primary: a delivery may need any of them."""
        try:
            if isinstance(self._redis, RedisCluster):
                pipe = self._redis.pipeline(transaction=False)
                for tag in await self._probe_tags_of(self._redis):
                    pipe.set(self._keys.probe(tag), b"1", px=PROBE_TTL_MS)
                await pipe.execute()
            else:
                await self._redis.set(self._keys.probe(), b"1", px=PROBE_TTL_MS)
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def _probe_tags_of(self, cluster: RedisCluster) -> list[str]:
        """One probe tag per primary, found again when the primaries changed (failover)."""
        await cluster.initialize()
        primaries = {node.name for node in cluster.get_primaries()}
        if self._probe_primaries != primaries:
            found: dict[str, str] = {}
            for n in range(64 * len(primaries)):  # ~len(primaries) tries each
                node = cluster.get_node_from_key(self._keys.probe(str(n)))
                if node is not None:
                    found.setdefault(node.name, str(n))
                if len(found) == len(primaries):
                    break
            self._probe_tags, self._probe_primaries = list(found.values()), primaries
        return self._probe_tags

    async def config(self, *names: str) -> dict[str, str] | None:
        """``CONFIG GET`` of ``names``; None where CONFIG is refused (a managed Redis). In a
        Cluster every primary is asked, and a node whose ``maxmemory-policy`` is not
        ``noeviction`` wins (the one that may evict marks is the one to report)."""
        try:
            answers: list[Any]
            if isinstance(self._redis, RedisCluster):
                everywhere = RedisCluster.PRIMARIES
                per_node: Any = await self._redis.config_get(*names, target_nodes=everywhere)
                answers = list(per_node.values()) if _by_node(per_node) else [per_node]
            else:
                answers = [await self._redis.config_get(*names)]
        except ResponseError:
            return None
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        texts = [{_text(k): _text(v) for k, v in found.items()} for found in answers]
        texts.sort(key=lambda found: found.get("maxmemory-policy") == "noeviction")
        return texts[0] if texts else None

    async def close(self) -> None:
        await self._redis.aclose()


def _by_node(found: dict[Any, Any]) -> bool:
    """A reply of several cluster nodes is keyed by node name, each value a reply."""
    return bool(found) and all(isinstance(v, dict) for v in found.values())


def _claim_of(state: bytes, token: str, tag: str) -> Claim:
    """A handler's state in the claim script's answer: ours, done, or its holder's token."""
    if state == b"claimed":
        return Claim(State.CLAIMED, token, tag)
    if state in _STATES:
        return Claim(_STATES[state])
    return Claim(State.BUSY, holder=_text(state))


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
