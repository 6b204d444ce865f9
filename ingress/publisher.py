"""Confirmed, persistent publishing of accepted callbacks to RabbitMQ.

:meth:`Publisher.publish` returns only once the broker confirmed the persistent message; a
refusal, a lost connection or a confirm later than the time-out raises :class:`PublishError`,
and the ingress spools the callback instead (:mod:`ingress.spool`).

The connection is made in the background: an unreachable broker at start-up does not hold the
ingress up (it answers from the spool meanwhile). It goes to the first node of
``SINK_AMQP_URL`` that answers; once connected, the robust connection reconnects (to the next
node of a cluster, :mod:`sink.amqp`) and re-declares the topology by itself. A publish in
flight when the node died gets no confirm: it raises and the callback is spooled, then
republished on the new connection (a duplicate at worst, which the workers' dedup absorbs);
it is never answered 200 without a confirm. A channel that keeps refusing (nacking)
publishes is not trusted to recover by itself: after :data:`NACK_LIMIT` nacks in a row the
publisher is not :attr:`~Publisher.ready` and reopens its channel, backing off while the new
one nacks too.

The hot path builds the properties directly (the bytes on the wire are exactly those
``aio_pika.Message`` produces: persistent, JSON, ``message_id`` = callId, the event-name
header, priority 0, at a tenth of the cost) and publishes through the channel's
:class:`~ingress.coalesce.Coalescer`: the publishes of one event-loop tick go out in one
socket write, each still awaiting its own confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError
from aio_pika.exceptions import PublishError as Returned
from pamqp.commands import Basic

from callback_sink.ingress.coalesce import Coalescer
from callback_sink.sink import headers, logs, names
from callback_sink.sink.amqp import ClusterConnection, connect_any
from callback_sink.sink.config import csv
from callback_sink.sink.errors import PublishError
from callback_sink.sink.events import Event, decode
from callback_sink.sink.partition import PARTITION_HEADER, partition_of
from callback_sink.sink.permanent import permanent
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context
from callback_sink.sink.topology import Topology, declare

log = logs.get("ingress")

#: One connection attempt (TCP, AMQP handshake, declarations) gets this long per node; a
#: healthy broker needs milliseconds, and start-up waits at most this for the first attempt.
CONNECT_TIMEOUT = 10.0
#: Back-off between failed first connection attempts: prompt, without hammering a down broker.
CONNECT_RETRY_MIN = 0.5
CONNECT_RETRY_MAX = 5.0
#: Once connected, how often the robust connection retries after a loss, seconds: every
#: callback costs an fsync while the broker is away, so come back promptly. The first retry
#: after a loss is immediate (to the next node of a cluster).
RECONNECT_INTERVAL = 1.0
#: Nacks in a row after which the channel is reopened: one nack can be a full queue at that
#: instant; a run of them on a channel that stays open was seen to last until a restart.
NACK_LIMIT = 3
#: Wait before reopening a nacking channel, doubling while reopened ones keep nacking.
REOPEN_DELAY_MIN = 0.5
REOPEN_DELAY_MAX = 30.0
#: What every message says besides its body, call id and event name.
CONTENT_TYPE = "application/json"
PERSISTENT = 2


class Publisher:
    """One robust connection and one confirming channel, shared by every request."""

    def __init__(
        self,
        amqp_url: str | Sequence[str],
        topology: Topology,
        confirm_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``amqp_url``: one URL, or the nodes of a cluster (a list, or comma-separated);
        ``ssl_context``: that of ``amqps://`` (:func:`callback_sink.sink.tls.amqp_context`)."""
        self._urls = csv(amqp_url) if isinstance(amqp_url, str) else tuple(amqp_url)
        self._ssl_context = ssl_context
        self._topology = topology
        self._timeout = confirm_timeout
        self._connection: ClusterConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: str | None = None
        self._connector: asyncio.Task[None] | None = None
        self._nacks = 0
        self._reopen_delay = REOPEN_DELAY_MIN
        self._reopening: asyncio.Task[None] | None = None
        self._coalescer: Coalescer | None = None

    @classmethod
    def of(cls, settings: Settings, topology: Topology) -> Publisher:
        """The publisher of ``settings``: its nodes, confirm time-out and TLS context."""
        return cls(settings.amqp_urls, topology, settings.publish_timeout, amqp_context(settings))

    async def start(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Start connecting in the background and wait up to ``wait`` seconds for the first
        attempt: a reachable broker is then used from the first request on."""
        attempted = asyncio.Event()
        self._connector = asyncio.create_task(self._connect_until_done(attempted))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempted.wait(), wait)

    @property
    def ready(self) -> bool:
        """Connected, with an open channel that is not nacking, and the topology declared."""
        return (
            self._exchange is not None
            and self._reopening is None
            and self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    @property
    def state(self) -> str:
        """``ready``, ``reopening`` (the channel kept nacking) or ``disconnected``."""
        if self.ready:
            return "ready"
        return "reopening" if self._reopening is not None else "disconnected"

    async def publish(
        self, name: str, call_id: str, body: bytes, event: Event | None = None
    ) -> None:
        """Publish ``body`` persistently under the routing key of event ``name`` and await the
        confirm (at most ``confirm_timeout`` seconds in all). In ordered mode the message
        carries its partition (from ``event``, or from the body when not given)."""
        channel, exchange = self._channel, self._exchange
        if not self.ready or channel is None or exchange is None:
            raise PublishError("broker not connected")
        found: dict[str, Any] = {headers.EVENT: name}
        if self._topology.partitions:
            partition = partition_of(event or decode(body), self._topology.partitions)
            found[PARTITION_HEADER] = str(partition)
        properties = Basic.Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            priority=0,
            message_id=call_id,
            headers=found,
        )
        try:
            coalescer = self._coalescer
            if coalescer is None or coalescer.closed or coalescer.owner is not channel:
                coalescer = await self._coalescer_of(channel)
            confirmation = await coalescer.publish(
                body, exchange=exchange, routing_key=names.routing_key(name), properties=properties
            )
        except TimeoutError as exc:
            raise PublishError(f"no publisher confirm within {self._timeout}s") from exc
        except Returned as exc:
            raise PublishError("broker returned the message: no queue is bound for it") from exc
        except DeliveryError as exc:
            self._nacked(channel)
            raise PublishError(f"broker refused the message: {type(exc).__name__}") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise PublishError(f"publish failed: {type(exc).__name__}: {exc}") from exc
        if confirmation is not None and not _is_ack(confirmation):
            self._nacked(channel)
            raise PublishError(f"broker refused the message: {type(confirmation).__name__}")
        self._nacks = 0
        self._reopen_delay = REOPEN_DELAY_MIN

    async def _coalescer_of(self, channel: AbstractRobustChannel) -> Coalescer:
        """The coalescer of ``channel``'s current underlying channel (a new one after a
        reconnection); waiting for a reconnecting channel is bounded by the time-out."""
        async with asyncio.timeout(self._timeout):
            underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)
        self._coalescer = Coalescer(underlay, self._timeout, owner=channel)
        return self._coalescer

    async def close(self) -> None:
        for task in (self._connector, self._reopening):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    def _nacked(self, channel: AbstractRobustChannel) -> None:
        self._nacks += 1
        if self._nacks >= NACK_LIMIT and self._reopening is None and channel is self._channel:
            self._reopening = asyncio.create_task(self._reopen(channel))

    async def _reopen(self, channel: AbstractRobustChannel) -> None:
        """Replace a channel that keeps nacking; not ready until the new one is open."""
        delay, self._reopen_delay = (
            self._reopen_delay,
            min(self._reopen_delay * 2, REOPEN_DELAY_MAX),
        )
        log.warning("ingress.channel_nacking", nacks=self._nacks, reopen_in=delay)
        try:
            await asyncio.sleep(delay)
            while True:
                try:
                    await self._open_channel()
                    break
                except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                    log.warning("ingress.channel_reopen_failed", error=type(exc).__name__)
                    await asyncio.sleep(REOPEN_DELAY_MAX)
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await channel.close()
            self._nacks = 0
            log.info("ingress.channel_reopened")
        finally:
            self._reopening = None

    async def _open_channel(self) -> None:
        connection = self._connection
        if connection is None:
            raise RuntimeError("not connected")
        async with asyncio.timeout(CONNECT_TIMEOUT):
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel

    async def _connect_until_done(self, attempted: asyncio.Event) -> None:
        delay = CONNECT_RETRY_MIN
        while True:
            try:
                await self._connect()
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                if (reason := permanent(exc)) is not None:
                    # A setting to fix, not an outage: say so at error level. The ingress
                    # keeps spooling and retrying, so a fix at the broker needs no restart.
                    delay = CONNECT_RETRY_MAX
                    log.error("ingress.broker_refused", variable="SINK_AMQP_URL",
                              reason=reason, retry_in=delay)  # fmt: skip
                else:
                    log.warning(
                        "ingress.broker_unreachable",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in=delay,
                    )
            else:
                node = self._connection.node if self._connection else None
                log.info("ingress.connected", exchange=self._topology.exchange, node=node)
                return
            finally:
                attempted.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX)

    async def _connect(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT * len(self._urls)):
            connection = await connect_any(
                self._urls,
                per_node=CONNECT_TIMEOUT,
                reconnect_interval=RECONNECT_INTERVAL,
                ssl_context=self._ssl_context,
            )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                assert isinstance(channel, AbstractRobustChannel)
                await declare(channel, self._topology)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel = connection, channel
        self._exchange = self._topology.exchange


def _is_ack(confirmation: object) -> bool:
    return type(confirmation).__name__ == "Ack"
