"""Confirmed, persistent publishing of accepted callbacks to RabbitMQ.

The ingress answers 200 only after :meth:`Publisher.publish` returns, i.e. after the broker
confirmed the persistent message; any failure raises :class:`PublishError`.
"""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError

from sink import headers, logs, names
from sink.errors import PublishError
from sink.events import Event
from sink.topology import Topology, declare

log = logs.get("ingress")


class Publisher:
    """One robust connection and one confirming channel, shared by every request."""

    def __init__(self, amqp_url: str, topology: Topology, confirm_timeout: float) -> None:
        self._url = amqp_url
        self._topology = topology
        self._timeout = confirm_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        """Connect and declare the topology; the robust connection reconnects by itself."""
        self._connection = await aio_pika.connect_robust(self._url)
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        await declare(channel, self._topology)
        self._exchange = await channel.get_exchange(self._topology.exchange, ensure=False)

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

    async def publish(self, event: Event, body: bytes) -> None:
        """Publish ``body`` persistently under the event's routing key and await the confirm."""
        if not self.ready or self._exchange is None:
            raise PublishError("broker not connected")
        message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=event.call_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={headers.EVENT: event.name},
        )
        try:
            confirmation = await self._exchange.publish(
                message,
                routing_key=names.routing_key(event.name),
                mandatory=True,
                timeout=self._timeout,
            )
        except (DeliveryError, AMQPError, ChannelInvalidStateError, RuntimeError) as exc:
            raise PublishError(f"publish failed: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise PublishError(f"no publisher confirm within {self._timeout}s") from exc
        except asyncio.CancelledError:
            raise
        if confirmation is not None and not _is_ack(confirmation):
            raise PublishError(f"broker refused the message: {type(confirmation).__name__}")

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def _is_ack(confirmation: object) -> bool:
    return type(confirmation).__name__ == "Ack"
