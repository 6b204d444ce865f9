"""Queue depths and consumers from the broker's side, read every ``SINK_QUEUE_POLL_S`` seconds.

Every worker polls, and so does process 0 of an ingress: with every worker stopped, the
ingress still reports the work piling up. Each poller sets the same broker figures, so
dashboards and alerts take ``max by (queue)`` of ``callback_sink_queue_messages`` and
``callback_sink_queue_consumers``, never their sum. A label's consumers are the most of any of
its queues (each worker consumes the work queue and every partition queue).

A passive declare answers with a queue's count of ready messages without touching them. The
work and dead-letter queues always exist; a delay queue exists only once some worker retried
into it, so every name a retry can use (:func:`~sink.topology.delay_steps_ms`: the ladder and
the configured ``SINK_RETRY_DELAYS``) is asked for and those missing count as empty. A passive
declare of a missing queue closes its channel, so the poll uses a connection of its own and
opens a new channel after each miss. A few dozen round trips every 15 seconds, never one per
scrape: a scrape only reads the gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelClosed, ChannelInvalidStateError

from callback_sink.sink import logs
from callback_sink.sink.amqp import connect_first
from callback_sink.sink.metrics import QueueMetrics
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context
from callback_sink.sink.topology import Topology, delay_steps_ms

log = logs.get("worker")

#: A poll that takes longer than this is abandoned until the next interval, seconds.
POLL_TIMEOUT = 10.0
#: How long stopping the poller may take before the process goes on without it, seconds.
STOP_TIMEOUT = 2.0


#: What a poll can meet when the broker or the connection goes away; the next poll retries.
POLL_ERRORS = (TimeoutError, OSError, AMQPError, ChannelInvalidStateError, RuntimeError)


class QueueDepths:
    """Sets ``callback_sink_queue_messages{queue}`` and ``callback_sink_queue_consumers{queue}``
    from the broker, periodically; ``role`` names the poller in its log lines."""

    def __init__(self, settings: Settings, metrics: QueueMetrics, role: str = "worker") -> None:
        self.settings = settings
        self.metrics = metrics
        self.role = role
        self.topology = Topology.of(settings)
        delays = delay_steps_ms(settings.retry_delays)
        self.delay_queues = [self.topology.delay_queue(ms) for ms in delays]
        self._connection: AbstractConnection | None = None
        #: The consumers of the last poll, by ``queue`` label.
        self.consumers: dict[str, int] = {}

    async def poll(self) -> dict[str, int]:
        """Read every depth once and set the gauges; returns them by ``queue`` label."""
        if self._connection is None or self._connection.is_closed:
            self._connection = await connect_first(
                self.settings.amqp_urls, per_node=5, ssl_context=amqp_context(self.settings)
            )
        connection = self._connection
        channel = await connection.channel()
        try:
            counts = {"work": 0, "retry": 0, "dead_letter": 0}
            consumers = dict.fromkeys(counts, 0)
            names = [("work", self.topology.work_queue), ("dead_letter", self.topology.dead_queue)]
            names += [("retry", name) for name in self.delay_queues]
            names += [("work", name) for name in self.topology.partition_queues]
            for label, name in names:
                (found, consuming), channel = await _ready(connection, channel, name)
                counts[label] += found
                consumers[label] = max(consumers[label], consuming)
        finally:
            with contextlib.suppress(AMQPError, ChannelInvalidStateError, RuntimeError):
                await channel.close()
        for label, count in counts.items():
            self.metrics.messages[label].set(count)
            self.metrics.consumers[label].set(consumers[label])
        self.consumers = consumers
        return counts

    async def run(self) -> None:
        """Poll until cancelled; a broker that does not answer leaves the last values."""
        while True:
            try:
                await asyncio.wait_for(self.poll(), POLL_TIMEOUT)
            except POLL_ERRORS as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("queue_depth.failed", poller=self.role, error=error)
                await self.close()
            await asyncio.sleep(self.settings.queue_poll_s)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(AMQPError, OSError, RuntimeError):
                await connection.close()


async def _ready(
    connection: AbstractConnection, channel: AbstractChannel, name: str
) -> tuple[tuple[int, int], AbstractChannel]:
    """The ready messages and the consumers of queue ``name`` (0, 0 if it does not exist),
    and a usable channel."""
    try:
        queue = await channel.declare_queue(name, passive=True)
    except ChannelClosed:  # 404: the queue does not exist, and the channel is gone
        return (0, 0), await connection.channel()
    declared = queue.declaration_result
    return (declared.message_count or 0, declared.consumer_count or 0), channel


@contextlib.asynccontextmanager
async def polling(
    settings: Settings, metrics: QueueMetrics, role: str = "worker"
) -> AsyncIterator[QueueDepths]:
    """Poll the queue depths in the background for as long as the context lasts."""
    depths = QueueDepths(settings, metrics, role)
    task = asyncio.create_task(depths.run())
    try:
        yield depths
    finally:
        # Bounded: a poll caught mid-handshake (or a close of a connection that is itself
        # reconnecting) must not hold up the process's shutdown; the process is ending.
        task.cancel()
        closing = asyncio.ensure_future(depths.close())
        await asyncio.wait({task, closing}, timeout=STOP_TIMEOUT)
