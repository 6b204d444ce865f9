"""One worker per sink when the dedup marks live in that worker's memory.

``SINK_DEDUP_URL=memory://`` keeps the marks in one process: a second worker on the same
queues would run a callback Easemob posted twice once in each worker. RabbitMQ's exclusive
consume would say so, but quorum queues accept a second "exclusive" consumer, so the guard is
a lock the broker holds for us: an *exclusive* queue ``<prefix>.memory-dedup-lock``, which
only one connection can declare and which disappears with that connection.

- A memory worker declares the lock (a second one gets RESOURCE_LOCKED), then checks that
  its queues have no consumer yet (a Redis worker already running), then consumes.
- A Redis worker checks for the lock before it consumes and again right after; if a memory
  worker holds it, it cancels and stops. The second look closes the window in which both
  start at the same instant: whichever consumed first, the other sees it.
"""

from __future__ import annotations

import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from callback_sink.sink.errors import StartupError
from callback_sink.sink.topology import Topology

__all__ = ["acquire", "check_unlocked", "lock_name"]


def lock_name(topology: Topology) -> str:
    return f"{topology.prefix}.memory-dedup-lock"


async def acquire(
    channel: AbstractChannel, topology: Topology, queues: list[AbstractQueue]
) -> None:
    """Take the lock for a memory worker on ``channel`` (held as long as its connection), then
    make sure nobody consumes ``queues`` yet. Raises :class:`StartupError` otherwise."""
    try:
        await channel.declare_queue(lock_name(topology), exclusive=True, auto_delete=True)
    except aiormq.exceptions.ChannelLockedResource:
        raise StartupError(
            "memory:// dedup allows one worker, and another worker with memory:// already "
            f"consumes {topology.work_queue!r}; set SINK_DEDUP_URL=redis://… to run several"
        ) from None
    for queue in queues:
        declared = await channel.declare_queue(queue.name, passive=True)
        consumers = declared.declaration_result.consumer_count
        if consumers:
            raise StartupError(
                f"memory:// dedup allows one worker, and queue {queue.name!r} already has "
                f"{consumers} consumer(s); set SINK_DEDUP_URL=redis://… on every worker"
            )


async def check_unlocked(connection: AbstractConnection, topology: Topology) -> None:
    """Raise :class:`StartupError` when a memory worker holds this sink's queues."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(lock_name(topology), passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return  # no lock: no memory worker
    except aiormq.exceptions.ChannelLockedResource:
        pass  # exclusive to another connection: a memory worker holds it
    finally:
        if not channel.is_closed:
            await channel.close()
    raise StartupError(
        f"queue {topology.work_queue!r} belongs to a worker with SINK_DEDUP_URL=memory:// "
        "(one worker only); stop it, or give every worker SINK_DEDUP_URL=redis://…"
    )
