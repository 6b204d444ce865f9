"""Confirmed, persistent publishing of accepted callbacks to RabbitMQ.

:meth:`Publisher.publish` returns only once the broker confirmed the persistent message; a
refusal, a lost connection or a confirm later than the time-out raises :class:`PublishError`,
and the ingress spools the callback instead (:mod:`ingress.spool`).

The connection is made in the background: an unreachable broker at start-up does not hold the
ingress up (it answers from the spool meanwhile). Once connected, aio-pika's robust connection
reconnects and re-declares the topology by itself.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

from sink import headers, logs, names
from sink.errors import PublishError
from sink.topology import Topology, declare

log = logs.get("ingress")

#: One connection attempt (TCP, AMQP handshake, declarations) gets this long; a healthy broker
#: needs milliseconds, and start-up waits at most this for the first attempt.
CONNECT_TIMEOUT = 10.0
#: Back-off between failed first connection attempts: prompt, without hammering a down broker.
CONNECT_RETRY_MIN = 0.5
CONNECT_RETRY_MAX = 5.0
#: Once connected, how often the robust connection retries after a loss, seconds: every
#: callback costs an fsync while the broker is away, so come back promptly.
RECONNECT_INTERVAL = 1.0


class Publisher:
    """One robust connection and one confirming channel, shared by every request."""

    def __init__(self, amqp_url: str, topology: Topology, confirm_timeout: float) -> None:
        self._url = amqp_url
        self._topology = topology
        self._timeout = confirm_timeout
        self._connection: aio_pika.RobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connector: asyncio.Task[None] | None = None

    async def start(self, wait: float = CONNECT_TIMEOUT) -> None:
        """Start connecting in the background and wait up to ``wait`` seconds for the first
        attempt: a reachable broker is then used from the first request on."""
        attempted = asyncio.Event()
        self._connector = asyncio.create_task(self._connect_until_done(attempted))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(attempted.wait(), wait)

    @property
    def ready(self) -> bool:
        """Connected, with an open channel and the topology declared."""
        return (
            self._exchange is not None
            and self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def publish(self, name: str, call_id: str, body: bytes) -> None:
        """Publish ``body`` persistently under the routing key of event ``name`` and await the
        confirm (at most ``confirm_timeout`` seconds in all)."""
        exchange = self._exchange
        if not self.ready or exchange is None:
            raise PublishError("broker not connected")
        message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=call_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={headers.EVENT: name},
        )
        try:
            # The whole call is bounded: aio-pika waits for a reconnecting channel untimed.
            async with asyncio.timeout(self._timeout):
                confirmation = await exchange.publish(
                    message, routing_key=names.routing_key(name), mandatory=True
                )
        except TimeoutError as exc:
            raise PublishError(f"no publisher confirm within {self._timeout}s") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise PublishError(f"publish failed: {type(exc).__name__}: {exc}") from exc
        if confirmation is not None and not _is_ack(confirmation):
            raise PublishError(f"broker refused the message: {type(confirmation).__name__}")

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()

    async def _connect_until_done(self, attempted: asyncio.Event) -> None:
        delay = CONNECT_RETRY_MIN
        while True:
            try:
                await self._connect()
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                log.warning(
                    "ingress.broker_unreachable",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
            else:
                log.info("ingress.connected", exchange=self._topology.exchange)
                return
            finally:
                attempted.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX)

    async def _connect(self) -> None:
        connection = aio_pika.RobustConnection(
            URL(self._url), reconnect_interval=RECONNECT_INTERVAL
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await connection.connect(timeout=CONNECT_TIMEOUT)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                assert isinstance(channel, AbstractRobustChannel)
                await declare(channel, self._topology)
                exchange = await channel.get_exchange(self._topology.exchange, ensure=False)
        except BaseException:
            await connection.close()
            raise
        self._connection, self._channel, self._exchange = connection, channel, exchange


def _is_ack(confirmation: object) -> bool:
    return type(confirmation).__name__ == "Ack"
