"""The answer to a connection over ``SINK_MAX_CONNECTIONS`` with none idle to close for it:
a canned 503, written without aiohttp ever seeing the connection, then closed.

Written for both event loops: uvloop's transports do not derive from ``asyncio.Transport``,
so nothing here may check that (an ``isinstance`` assertion once turned every refusal under
uvloop into a reset and a traceback).
"""

from __future__ import annotations

import asyncio
from typing import cast

#: A refused connection is answered once its request starts arriving, or after this long:
#: answering before the client sent anything risks a reset that loses the 503.
REFUSAL_WAIT = 0.5
OVERLOADED_BODY = b'{"error":"overloaded"}'
OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(OVERLOADED_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + OVERLOADED_BODY
)


class Overloaded(asyncio.Protocol):
    """Answers a connection over the cap with a canned 503 and closes it."""

    __slots__ = ("_timer", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_WAIT, self._answer)

    def data_received(self, data: bytes) -> None:
        self._answer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _answer(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and not transport.is_closing():
            transport.write(OVERLOADED_RESPONSE)
            transport.close()
