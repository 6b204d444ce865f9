"""Limits of one ingress process: connections, read deadlines, requests in flight, counters.

aiohttp closes an idle keep-alive connection, but a client that sends half a request head, or
half a body, holds its connection (and the memory of what it sent) for as long as it likes;
and nothing stops ten thousand connections from opening. So:

- :class:`ConnectionGuard` wraps aiohttp's protocol factory. Over ``SINK_MAX_CONNECTIONS``
  open connections, a new one is answered a canned 503 and closed, without aiohttp ever
  seeing it. Every connection must deliver a complete request head within
  ``SINK_READ_TIMEOUT_S`` of its first byte (or of being opened), or it is closed: slow
  senders lose their slot instead of holding it.
- The body deadline and the cap on requests in flight live in :mod:`ingress.app`, which
  reads the body in bounded chunks; aiohttp's own flow control pauses a connection whose
  unread body exceeds its read buffer, so memory per connection stays bounded.
- :class:`Counters` counts answers by status and refusals by reason, in process, for a
  metrics exporter to read.

The connection cap is also kept below the process's file-descriptor limit
(:func:`connection_cap`): running out of descriptors makes the accept loop fail.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from callback_sink.sink import logs
from callback_sink.sink.settings import Settings

log = logs.get("ingress")

#: File descriptors kept free of HTTP connections: the broker connection, spool segments,
#: refused connections being answered, logs.
FD_RESERVE = 64
#: A refused connection is answered once its request starts arriving, or after this long:
#: answering before the client sent anything risks a reset that loses the 503.
REFUSAL_WAIT = 0.5
#: aiohttp's limits on a request head; Easemob sends a handful of short headers.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
#: Read buffer per connection: aiohttp pauses reading once this much body is unread.
READ_BUFSIZE = 64 * 1024
#: How long a finished request's unread body is drained before the connection is closed.
LINGERING_TIME = 2.0

OVERLOADED_BODY = b'{"error":"overloaded"}'
OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(OVERLOADED_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + OVERLOADED_BODY
)


@dataclass
class Counters:
    """In-process counts for a metrics exporter: answers by status, refusals by reason."""

    requests: Counter[int] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            "requests": {str(status): n for status, n in sorted(self.requests.items())},
            "refusals": dict(sorted(self.refusals.items())),
        }


def handler_args(settings: Settings) -> dict[str, Any]:
    """aiohttp's per-connection limits (``web.Application(handler_args=…)``)."""
    return {
        "keepalive_timeout": settings.keepalive_timeout_s,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "read_bufsize": READ_BUFSIZE,
        "lingering_time": min(LINGERING_TIME, settings.read_timeout_s),
    }


def connection_cap(wanted: int) -> int:
    """``wanted``, raising the soft file-descriptor limit towards the hard one if needed, or
    less (with a warning) when even the hard limit leaves no room for it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        cap = max(1, soft - FD_RESERVE)
        log.warning("ingress.connection_cap_lowered", wanted=wanted, cap=cap, fd_limit=soft)
        return cap
    return wanted


class ConnectionGuard:
    """Counts open connections, refuses those over the cap, enforces the head deadline."""

    def __init__(
        self,
        max_connections: int,
        read_timeout: float,
        on_refused: Callable[[int | None, str], None],
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self.open = 0
        self._on_refused = on_refused

    def wrap(self, factory: Callable[[], RequestHandler]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's."""

        def make() -> asyncio.Protocol:
            if self.open >= self.max_connections:
                self._on_refused(503, "too many connections")
                return _Refusal()
            return _Watched(factory(), self)

        return make

    def timed_out(self) -> None:
        self._on_refused(None, "request head not received in time")


class _Watched(asyncio.Protocol):
    """aiohttp's protocol, plus the head deadline: armed when a connection opens and when
    bytes arrive on an idle one; it closes the connection unless a new request head was
    parsed in the meantime."""

    __slots__ = ("_armed_at", "_guard", "_inner", "_timer")

    def __init__(self, inner: RequestHandler, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._guard.open += 1
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if self._timer is None and not inner._request_in_progress and not inner._messages:
            self._arm()
        inner.data_received(data)
        if self._timer is not None and inner._request_count != self._armed_at:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> None:
        self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.open -= 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _arm(self) -> None:
        self._armed_at = self._inner._request_count
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.read_timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        inner = self._inner
        if inner._request_count == self._armed_at and not inner._request_in_progress:
            self._guard.timed_out()
            inner.force_close()


class _Refusal(asyncio.Protocol):
    """Answers a connection over the cap with a canned 503 and closes it."""

    __slots__ = ("_timer", "_transport")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
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


class IngressRunner(web.AppRunner):
    """An ``AppRunner`` whose sites serve through a :class:`ConnectionGuard`."""

    __slots__ = ("_guard",)

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    @property
    def server(self) -> Any:  # a protocol factory, which is all a site needs of it
        server = super().server
        return None if server is None else self._guard.wrap(server)
