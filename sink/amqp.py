"""Connections to RabbitMQ: one node or a cluster, given as a list of node URLs.

``SINK_AMQP_URL`` may list several URLs, comma-separated, one per cluster node. A process
connects to the first that answers (:func:`connect_any`). Once connected, the connection is
aio-pika's robust connection, with one difference: every failed attempt and every lost
connection moves it on to the next URL of the list (round robin), so when its node dies it
reconnects to a surviving one, and its robust channels re-declare what they declared and
restart their consumers there. With one URL it is exactly aio-pika's robust connection:
it retries that URL. A TCP load balancer in front of the cluster is one URL as well.

:func:`connect_first` is the short-lived, non-robust variant for tools (a CLI command, a
probe) that simply need some node now. URLs in logs never carry their password
(:func:`redact`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from yarl import URL

from callback_sink.sink import logs, tls

log = logs.get("amqp")

#: What a failed connection attempt raises: refused, reset, timed out, handshake refused.
CONNECT_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)


def redact(url: str | URL) -> str:
    """``url`` with its password replaced by ``***``, for logs and messages."""
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else str(parsed)


def node_of(url: str | URL) -> str:
    """``host:port`` of a node URL: how logs name a node."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


class ClusterConnection(aio_pika.RobustConnection):
    """A robust connection that walks a list of node URLs: after a failed attempt or a lost
    connection, the next attempt goes to the next URL (a lost node is usually still down)."""

    def __init__(self, urls: Sequence[str], first: int = 0, **kwargs: Any) -> None:
        if not urls:
            raise ValueError("no AMQP URL")
        self._urls = [URL(url) for url in urls]
        self._index = first % len(self._urls)
        super().__init__(self._urls[self._index], **kwargs)

    @property
    def node(self) -> str:
        """``host:port`` of the node this connection is on (or tries next)."""
        return node_of(self.url)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        # Called for a lost connection and for a failed attempt alike (aio-pika reports
        # both through it), before aio-pika schedules the next attempt.
        if self.connected.is_set() and not self.close_called:
            log.warning("amqp.connection_lost", node=self.node, next_node=self._peek())
        self._advance()
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self.connection_attempt > 1:  # aio-pika counts the first connection as 1
            log.info("amqp.reconnected", node=self.node)

    def _peek(self) -> str:
        return node_of(self._urls[(self._index + 1) % len(self._urls)])

    def _advance(self) -> None:
        if len(self._urls) > 1:
            self._index = (self._index + 1) % len(self._urls)
            self.url = self._urls[self._index]


async def connect_any(
    urls: Sequence[str],
    *,
    per_node: float,
    reconnect_interval: float,
    client_properties: dict[str, Any] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ClusterConnection:
    """A robust connection to the first of ``urls`` that answers within ``per_node`` seconds,
    trying them in order; the last error when none does. It fails over along the list later.
    ``client_properties``: shown by the broker (``connection_name`` names the connection).
    ``ssl_context``: of the ``amqps://`` URLs (:func:`callback_sink.sink.tls.amqp_context`)."""
    error: BaseException | None = None
    extra: dict[str, Any] = {"ssl_context": ssl_context}
    if client_properties is not None:
        extra["client_properties"] = client_properties
    for index, url in enumerate(urls):
        connection = ClusterConnection(urls, index, reconnect_interval=reconnect_interval, **extra)
        try:
            await connection.connect(timeout=per_node)
        except CONNECT_ERRORS as exc:
            await connection.close()
            error = tls.failed(exc, node_of(url)) or exc
            log.warning("amqp.node_unreachable", node=node_of(url), error=_describe(error))
            continue
        except BaseException:
            await connection.close()
            raise
        log.info("amqp.connected", node=connection.node, nodes=len(urls))
        return connection
    if error is None:
        raise ValueError("no AMQP URL")
    raise error


async def connect_first(
    urls: Sequence[str], *, per_node: float = 5.0, ssl_context: ssl.SSLContext | None = None
) -> AbstractConnection:
    """A plain connection to the first of ``urls`` that answers, for short-lived tools."""
    error: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=per_node, ssl_context=ssl_context)
        except CONNECT_ERRORS as exc:
            error = tls.failed(exc, node_of(url)) or exc
    if error is None:
        raise ValueError("no AMQP URL")
    raise error


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
