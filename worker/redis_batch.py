"""Coalescing the Redis script calls of concurrent callbacks into one round trip.

A worker runs many callbacks at once (``SINK_CONCURRENCY``); their claims and done marks,
each one Lua script call, tend to be issued within the same turn of the event loop. A
:class:`ScriptBatcher` queues the calls made during one turn and sends them as one pipeline
(not a transaction: each script is atomic on its own), then hands each caller its own
result or error. A lone call goes out as it is, with no added latency. Against a Redis
Cluster the pipeline is split by node (each script's keys share one slot).

A batcher given a :class:`~callback_sink.worker.replica_wait.WaitReport` always pipelines and
ends the pipeline with ``WAIT`` (one per node the batch touched, on the same connection as
its scripts): its callers get their results once the replicas acknowledged them or the
timeout passed (:mod:`callback_sink.worker.replica_wait`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from callback_sink.worker.replica_wait import WaitReport

if TYPE_CHECKING:
    from callback_sink.sink.redis_client import Client

Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, client: Client, waits: WaitReport | None = None) -> None:
        self._client = client
        self._waits = waits
        self._pending: list[Call] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush_soon)
        self._pending.append((script, keys, args, future))
        return await future

    def _flush_soon(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[Call], reloaded: bool = False) -> None:
        if len(batch) == 1 and self._waits is None:
            script, keys, args, future = batch[0]
            try:
                _settle(future, await script(keys=keys, args=args))
            except BaseException as exc:
                _fail(future, exc)
            return
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            # not pipe.evalsha(): a cluster pipeline refuses that method, not the command
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            waits = await self._queue_waits(pipe, batch)
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # execute() has reset the pipeline already
            for *_, future in batch:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        if waits and self._waits is not None:
            for acked in results[len(batch) :]:
                self._waits.acked(acked if isinstance(acked, BaseException) else int(acked),
                                  marks=len(batch) // waits)  # fmt: skip
        retry = []
        for (script, keys, args, future), result in zip(batch, results, strict=False):
            if isinstance(result, NoScriptError) and not reloaded:
                retry.append((script, keys, args, future))
            elif isinstance(result, Exception):
                _fail(future, result)
            else:
                _settle(future, result)
        if retry:  # a new primary (failover) or a flushed script cache: load, then once more
            try:
                for script in {call[0] for call in retry}:
                    await self._client.script_load(script.script)
            except Exception as exc:
                for *_, future in retry:
                    _fail(future, exc)
                return
            await self._flush(retry, reloaded=True)

    async def _queue_waits(self, pipe: Any, batch: list[Call]) -> int:
        """Queue the ``WAIT`` of each node ``batch`` writes to; answer how many."""
        if self._waits is None:
            return 0
        wait = ("WAIT", self._waits.wait.replicas, self._waits.wait.timeout_ms)
        if not isinstance(self._client, RedisCluster):
            pipe.execute_command(*wait)
            return 1
        await self._client.initialize()  # a no-op once the slot map is known
        nodes = {}
        for _, keys, *_ in batch:
            node = self._client.get_node_from_key(keys[0])
            if node is not None:
                nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command(*wait, target_nodes=node)
        return len(nodes)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
