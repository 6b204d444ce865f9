"""The durable RabbitMQ topology, declared in this one module.

- ``{prefix}``: a durable topic exchange; the ingress publishes here with the event's
  routing key (``muc.apply``), so other consumers can bind to just what they want.
- ``{prefix}.work``: a durable quorum queue bound to everything (``#``); the workers eat it.
- ``{prefix}.delay.{ms}``: one quorum queue per retry delay; its messages expire after the
  delay and dead-letter straight back into the work queue.
- ``{prefix}.dead``: a fanout exchange and a quorum queue holding dead letters.

Every queue is a quorum queue, replicated on ``SINK_QUORUM_SIZE`` nodes of a cluster (the
broker's default when unset): a node loss costs no message and no queue.

Every declaration is idempotent: whichever process starts first declares, later ones agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from callback_sink.sink.partition import PARTITION_HEADER
from callback_sink.sink.settings import Settings

#: Safety net only: the worker dead-letters on its own attempt count long before this, but a
#: message that crashes worker processes outright (never settled) must not loop forever.
DELIVERY_LIMIT = 20

#: The delays (seconds) a retry or a deferral may wait, besides the configured tiers
#: (``SINK_RETRY_DELAYS``): every distinct delay is a durable queue, so a delay a handler asks
#: for (``Retry(delay=…)``) is rounded up to one of these and their number stays small.
RETRY_LADDER = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)


def delay_step(delay: float, tiers: tuple[float, ...] = ()) -> float:
    """``delay`` rounded up to a step of the ladder or a configured tier (the longest step
    for anything longer)."""
    steps = sorted({*RETRY_LADDER, *tiers})
    return next((step for step in steps if step >= delay), steps[-1])


def delay_steps_ms(tiers: tuple[float, ...] = ()) -> list[int]:
    """Every delay queue a sink with ``tiers`` may declare, in milliseconds."""
    return sorted({max(1, int(d * 1000)) for d in (*RETRY_LADDER, *tiers)})


#: Quorum queues dead-letter with confirms only with these two arguments together.
_AT_LEAST_ONCE: dict[str, Any] = {
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@dataclass(frozen=True)
class Topology:
    """Names of every exchange and queue, derived from one prefix."""

    prefix: str = "callback-sink"
    #: Replicas of each quorum queue (``SINK_QUORUM_SIZE``); ``None``: the broker's default.
    #: RabbitMQ refuses to re-declare a queue with another value, so every process agrees.
    quorum_size: int | None = None
    #: Partition queues of ordered mode (``SINK_ORDERING=group``: ``SINK_PARTITIONS``); 0 is
    #: unordered mode: one work queue.
    partitions: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        """The topology ``settings`` describe: prefix, quorum size, partitions."""
        return cls(settings.topology_prefix, settings.quorum_size, settings.ordered_partitions)

    @property
    def quorum(self) -> dict[str, Any]:
        """The arguments that make a queue a quorum queue of this topology's size."""
        size = {"x-quorum-initial-group-size": self.quorum_size} if self.quorum_size else {}
        return {"x-queue-type": "quorum", **size}

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def work_queue(self) -> str:
        return f"{self.prefix}.work"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dead"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.dead"

    def delay_queue(self, delay_ms: int) -> str:
        return f"{self.prefix}.delay.{delay_ms}"

    @property
    def partition_exchange(self) -> str:
        """Ordered mode: a headers exchange, fed by the topic exchange, that routes each
        callback to its partition queue by the ``sink-partition`` header."""
        return f"{self.prefix}.partitions"

    def partition_queue(self, index: int) -> str:
        return f"{self.prefix}.work.p{index}"

    @property
    def partition_queues(self) -> list[str]:
        return [self.partition_queue(i) for i in range(self.partitions)]

    @property
    def work_arguments(self) -> dict[str, Any]:
        """A work or partition queue: quorum, dead-lettering to the dead-letter exchange."""
        return {
            **self.quorum,
            "x-dead-letter-exchange": self.dead_exchange,
            "x-delivery-limit": DELIVERY_LIMIT,
            **_AT_LEAST_ONCE,
        }


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare the exchanges and queues every process needs."""
    exchange = await channel.declare_exchange(
        topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead_exchange = await channel.declare_exchange(
        topology.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    dead = await channel.declare_queue(topology.dead_queue, durable=True, arguments=topology.quorum)
    await dead.bind(dead_exchange, routing_key="#")
    work = await channel.declare_queue(
        topology.work_queue, durable=True, arguments=topology.work_arguments
    )
    if not topology.partitions:
        await work.bind(exchange, routing_key="#")
        return
    # Ordered mode: the work queue keeps only what is put there by name (dead letters
    # replayed, delay queues expiring); callbacks go to their partitions.
    await work.unbind(exchange, routing_key="#")
    partitions = await channel.declare_exchange(
        topology.partition_exchange, aio_pika.ExchangeType.HEADERS, durable=True
    )
    await partitions.bind(exchange, routing_key="#")
    for index, name in enumerate(topology.partition_queues):
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={**topology.work_arguments, "x-single-active-consumer": True},
        )
        await queue.bind(partitions, arguments={"x-match": "all", PARTITION_HEADER: str(index)})


async def declare_delay(channel: AbstractChannel, topology: Topology, delay_ms: int) -> str:
    """Declare (idempotently) the delay queue for ``delay_ms`` and return its name."""
    name = topology.delay_queue(delay_ms)
    await channel.declare_queue(
        name,
        durable=True,
        arguments={
            **topology.quorum,
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": topology.work_queue,
            **_AT_LEAST_ONCE,
        },
    )
    return name


async def delete(channel: AbstractChannel, topology: Topology, delays_ms: list[int]) -> None:
    """Remove a topology (tests use a uuid prefix each and clean up after themselves)."""
    for queue in (topology.work_queue, topology.dead_queue, *topology.partition_queues,
                  *(topology.delay_queue(ms) for ms in delays_ms)):  # fmt: skip
        await channel.queue_delete(queue)
    exchanges = [topology.exchange, topology.dead_exchange]
    if topology.partitions:
        exchanges.append(topology.partition_exchange)
    for exchange in exchanges:
        await channel.exchange_delete(exchange)
