"""RabbitMQ and Redis as the benchmark sees them: queue depths, consumers, and the cleanup of
what each scenario made (its ``bench-<uuid>`` exchanges, queues and Redis keys)."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import redis.asyncio as aioredis
from aio_pika.exceptions import AMQPError, ChannelClosed, ChannelNotFoundEntity
from common import AMQP_URL, CLEANUP_TIMEOUT, DELAY_TIERS, PARTITIONS, REDIS_URL, log

from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology


async def _counts(name: str) -> tuple[int, int]:
    """(messages ready, consumers) of queue ``name``; (0, 0) when it does not exist."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return 0, 0
        found = queue.declaration_result
        return int(found.message_count or 0), int(found.consumer_count or 0)
    finally:
        await connection.close()


async def queue_depth(name: str) -> int:
    return (await _counts(name))[0]


async def consumers_of(name: str) -> int:
    return (await _counts(name))[1]


async def settled_depth(name: str, expected: int, within: float = 10.0) -> int:
    """The queue's depth once it reached ``expected`` or stopped changing for 1.5 s (quorum
    queue counts trail the confirms a little)."""
    deadline = time.monotonic() + within
    last, since = -1, time.monotonic()
    while True:
        depth = await queue_depth(name)
        if depth >= expected or time.monotonic() > deadline:
            return depth
        if depth != last:
            last, since = depth, time.monotonic()
        elif time.monotonic() - since > 1.5:
            return depth
        await asyncio.sleep(0.2)


async def delete_topology(prefix: str, extra_queues: tuple[str, ...] = ()) -> None:
    topology = Topology(prefix)
    delays = {*(max(1, int(s * 1000)) for s in (*Settings().retry_delays, *DELAY_TIERS))}
    ordered = Topology(prefix, partitions=PARTITIONS)
    queues = [topology.work_queue, topology.dead_queue, *ordered.partition_queues, *extra_queues]
    queues += [topology.delay_queue(ms) for ms in sorted(delays)]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except ChannelClosed:
                channel = await connection.channel()
        exchanges = (topology.exchange, topology.dead_exchange, ordered.partition_exchange)
        for exchange in (*exchanges, *extra_queues):
            try:
                await channel.exchange_delete(exchange)
            except ChannelClosed:
                channel = await connection.channel()
    finally:
        await connection.close()


async def delete_redis_keys(prefix: str) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        deleted = 0
        for i in range(0, len(keys), 1000):
            deleted += int(await client.delete(*keys[i : i + 1000]))
        return deleted
    finally:
        await client.aclose()


async def cleanup(prefix: str, extra_queues: tuple[str, ...] = ()) -> None:
    """Delete what a scenario made; never raise."""
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await delete_topology(prefix, extra_queues)
            await delete_redis_keys(prefix)
    except (AMQPError, OSError, TimeoutError, aioredis.RedisError) as exc:
        log(f"could not clean up {prefix}: {type(exc).__name__}: {exc}")
