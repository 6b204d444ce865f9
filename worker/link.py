"""The worker's link to the broker: its robust connection, named, and whether it is up.

aio-pika's robust connection reconnects by itself and its robust channels then restore the
prefetch, the declarations and the consumers. Between the loss and the end of that restore
the worker consumes nothing, so it is not ready: :attr:`BrokerLink.up` turns false on the
connection's close callback (a lost connection, a failed attempt, the final close) and true
again on its reconnect callback, which aio-pika calls once every channel is restored.

The connection carries a ``connection_name`` (host and pid), so an operator finds a worker's
connection in ``rabbitmqctl list_connections name`` or the management UI.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from callback_sink.sink.amqp import ClusterConnection, connect_any

#: Once connected, how soon the robust connection retries after a loss, seconds. The first
#: retry is immediate and goes to the next node of a cluster; deliveries in hand when the
#: node died cannot be acked any more and come back (redelivered, deduplicated).
RECONNECT_INTERVAL = 1.0


def connection_name() -> str:
    """``callback-sink worker <host> pid <pid>``: this process's connection, by name."""
    return f"callback-sink worker {socket.gethostname()} pid {os.getpid()}"


class BrokerLink:
    """Connects a worker to the broker and tracks whether the connection is up and restored."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        #: True while the connection is open and its channels restored.
        self.up = False
        #: Of ``amqps://`` URLs (:func:`callback_sink.sink.tls.amqp_context`).
        self.ssl_context = ssl_context

    async def connect(self, urls: Sequence[str]) -> ClusterConnection:
        """A robust connection to the first of ``urls`` that answers, watched from now on."""
        connection = await connect_any(
            urls,
            per_node=5,
            reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": connection_name()},
            ssl_context=self.ssl_context,
        )
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._restored)
        self.up = connection.connected.is_set()
        return connection

    def _lost(self, *_: Any) -> None:
        self.up = False

    def _restored(self, *_: Any) -> None:
        self.up = True
