"""The Redis side of :mod:`~worker.crashloop` and :mod:`~worker.liveness`, mixed into
:class:`~worker.redis_store.RedisStore`.

- A worker's liveness key ``<prefix>:live:<worker-id>`` is one plain key, set and read with
  plain commands (``SET PX``, ``PTTL``, ``DEL``): it belongs to no callback, so in a Redis
  Cluster no script may touch it beside a callback's keys.
- A callback's crash record is one hash (``a``: the mark of its lone run in flight, ``d``: its
  deaths, ``e``: its epoch) built by :meth:`Keys.of <worker.redis_keys.Keys.of>` with the
  callId as hash tag, like its marks, and changed by one script each, which mirror the pure
  :func:`~worker.crashloop.reckon` and :func:`~worker.crashloop.ended`. It lives as long as
  the kind binding (the dedup TTL).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from callback_sink.sink.errors import DedupUnavailable
from callback_sink.worker.crashloop import Reckoning

#: What a store that is away raises: a cluster that cannot be reached or has slots uncovered
#: (mid-failover) raises RedisClusterException, which is no RedisError.
DOWN = (RedisError, OSError, RedisClusterException)

if TYPE_CHECKING:
    from callback_sink.sink.redis_client import Client
    from callback_sink.worker.dedup import ClaimRequest
    from callback_sink.worker.redis_keys import Keys

# KEYS[1]: the crash record. ARGV: mark, epoch, judged mark, dead (0/1), TTL ms.
# Returns {deaths, mark to judge first or ''}.
_RECKON = """
local r = redis.call('HMGET', KEYS[1], 'a', 'd', 'e')
local alone, deaths = r[1] or '', tonumber(r[2] or '0')
if (r[3] or '') ~= ARGV[2] then alone, deaths = '', 0 end
if alone ~= '' and alone ~= ARGV[1] then
  if alone ~= ARGV[3] then return {deaths, alone} end
  if ARGV[4] == '1' then deaths = deaths + 1 end
end
redis.call('HSET', KEYS[1], 'a', ARGV[1], 'd', deaths, 'e', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {deaths, ''}
"""
# KEYS[1]: the crash record; ARGV[1]: the mark of the lone run that ended.
_ENDED = """
if redis.call('HGET', KEYS[1], 'a') == ARGV[1] then redis.call('HSET', KEYS[1], 'a', '') end
return 0
"""


class CrashRecords:
    """Liveness keys and crash records; needs the store's client and key names."""

    _redis: Client
    _keys: Keys

    @functools.cached_property
    def _reckon_script(self) -> AsyncScript:
        return self._redis.register_script(_RECKON)

    @functools.cached_property
    def _ended_script(self) -> AsyncScript:
        return self._redis.register_script(_ENDED)

    def _live_key(self, worker: str) -> str:
        return f"{self._keys.prefix}:live:{worker}"

    def _record_key(self, ask: ClaimRequest) -> str:
        return self._keys.of("crash", ask.call_id, ask.key)

    async def alive(self, worker: str, ttl: float) -> None:
        try:
            await self._redis.set(self._live_key(worker), b"1", px=max(1, int(ttl * 1000)))
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def gone(self, worker: str) -> None:
        try:
            await self._redis.delete(self._live_key(worker))
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc

    async def live(self, workers: Sequence[str]) -> list[float]:
        try:
            pipe = self._redis.pipeline(transaction=False)
            for worker in workers:
                pipe.pttl(self._live_key(worker))
            left = await pipe.execute()
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        # -2: no such key (gone); -1: no TTL (set by hand: alive).
        return [float("inf") if ms == -1 else max(0, int(ms)) / 1000 for ms in left]

    async def reckon(
        self, ask: ClaimRequest, mark: str, epoch: str, judged: str, dead: bool
    ) -> Reckoning:
        args: list[str | int] = [mark, epoch, judged, int(dead), max(1, int(ask.bind_ttl * 1000))]
        try:
            deaths, judge = await self._reckon_script(keys=[self._record_key(ask)], args=args)
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
        return Reckoning(int(deaths), judge.decode() if isinstance(judge, bytes) else str(judge))

    async def alone_ended(self, ask: ClaimRequest, mark: str) -> None:
        try:
            await self._ended_script(keys=[self._record_key(ask)], args=[mark])
        except DOWN as exc:
            raise DedupUnavailable(f"redis: {exc}") from exc
