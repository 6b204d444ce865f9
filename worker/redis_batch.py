"""Coalescing the Redis script calls of concurrent callbacks into one round trip.

A worker runs many callbacks at once (``SINK_CONCURRENCY``); their claims and done marks,
each one Lua script call, tend to be issued within the same turn of the event loop. A
:class:`ScriptBatcher` queues the calls made during one turn and sends them as one pipeline
(not a transaction: each script is atomic on its own), then hands each caller its own
result or error. A lone call goes out as it is, with no added latency.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
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

    async def _flush(self, batch: list[Call]) -> None:
        if len(batch) == 1:
            script, keys, args, future = batch[0]
            try:
                _settle(future, await script(keys=keys, args=args))
            except BaseException as exc:
                _fail(future, exc)
            return
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:  # execute() has reset the pipeline already
            for *_, future in batch:
                _fail(future, exc)
            return
        for (script, keys, args, future), result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                await self._flush([(script, keys, args, future)])
            elif isinstance(result, Exception):
                _fail(future, result)
            else:
                _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # the caller may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
