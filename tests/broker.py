"""Small helpers to look at the real broker from tests."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage


async def queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def take_all(
    amqp_url: str, queue: str, expect: int, within: float = 10.0
) -> list[AbstractIncomingMessage]:
    """Consume and ack ``expect`` messages from ``queue`` (fails if fewer arrive in time)."""
    connection = await aio_pika.connect(amqp_url)
    taken: list[AbstractIncomingMessage] = []
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=False)
        async with asyncio.timeout(within):
            while len(taken) < expect:
                message = await q.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                await message.ack()
                taken.append(message)
        return taken
    finally:
        await connection.close()


async def publish_raw(amqp_url: str, queue: str, body: bytes) -> None:
    """Put bytes straight onto a queue, bypassing the ingress (for garbage tests)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue,
        )
    finally:
        await connection.close()
