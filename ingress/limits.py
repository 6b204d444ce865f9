"""Limits of one ingress process: connections, read deadlines, requests in flight, counters.

aiohttp closes an idle keep-alive connection, but a client that sends half a request head, or
half a body, holds its connection (and the memory of what it sent) for as long as it likes;
and nothing stops ten thousand connections from opening. So:

- :class:`ConnectionGuard` wraps aiohttp's protocol factory. A peer outside
  ``SINK_ALLOWED_NETWORKS`` (and not a trusted proxy, whose clients are checked per request
  from X-Forwarded-For) is closed as soon as it connects, before a byte is read: it never
  holds a slot. At ``SINK_MAX_CONNECTIONS`` open
  connections the oldest idle keep-alive one is closed to make room; with none idle, a new
  one is answered a canned 503 and closed, without aiohttp ever seeing it. A connection
  carries at most ``SINK_KEEPALIVE_MAX_REQUESTS`` requests (:func:`close_worn`), so no
  client keeps a slot for good. Every connection must deliver a complete request head within
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from callback_sink.ingress.network import Network, parse_address
from callback_sink.ingress.overload import Overloaded
from callback_sink.sink import logs
from callback_sink.sink.settings import Settings

log = logs.get("ingress")

#: File descriptors kept free of HTTP connections: the broker connection, spool segments,
#: refused connections being answered, logs.
FD_RESERVE = 64
#: aiohttp's limits on a request head; Easemob sends a handful of short headers.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
#: Read buffer per connection: aiohttp pauses reading once this much body is unread.
READ_BUFSIZE = 64 * 1024
#: How long a finished request's unread body is drained before the connection is closed.
LINGERING_TIME = 2.0


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


#: Told each refusal of a connection: its status (None: closed unanswered), reason, peer.
OnRefused = Callable[[int | None, str, str | None], None]


def close_worn(max_requests: int) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook: the answer to a connection's ``max_requests``-th
    request says ``Connection: close``, so that no client keeps its slot (and its process:
    SO_REUSEPORT balances connections, not requests) for good."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        if request.protocol._request_count >= max_requests:
            response.force_close()
            response.headers["Connection"] = "close"  # its headers were prepared already

    return prepare


class ConnectionGuard:
    """Tracks open connections: closes those from outside the allow-list at once, makes room
    for a new one by closing the oldest idle keep-alive one, refuses the rest over the cap,
    enforces the head deadline."""

    def __init__(
        self,
        max_connections: int,
        read_timeout: float,
        on_refused: OnRefused,
        network: Network | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        #: Open connections, oldest first (a dict: ordered, O(1) removal).
        self.connections: dict[_Watched, None] = {}
        #: Idle keep-alive connections closed to make room for a new one.
        self.reclaimed = 0
        self._on_refused = on_refused
        self._network = network if network is not None and network.checks else None

    @property
    def open(self) -> int:
        return len(self.connections)

    def wrap(self, factory: Callable[[], RequestHandler]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's."""

        def make() -> asyncio.Protocol:
            if len(self.connections) >= self.max_connections and not self._reclaim():
                self._on_refused(503, "too many connections", None)
                return Overloaded()
            watched = _Watched(factory, self)
            self.connections[watched] = None  # counted at once: accepts come in batches
            return watched

        return make

    def _reclaim(self) -> bool:
        """Close the oldest idle keep-alive connection; False when none is idle."""
        for watched in self.connections:
            if watched.idle:
                del self.connections[watched]
                watched.close()
                self.reclaimed += 1
                return True
        return False

    def outsider(self, transport: asyncio.BaseTransport) -> str | None:
        """The peer of ``transport`` when the allow-list refuses it at accept, else None.
        A trusted proxy passes (its clients are checked per request, from X-Forwarded-For);
        any other peer is the client itself."""
        network = self._network
        if network is None:
            return None
        peer = transport.get_extra_info("peername")
        text = str(peer[0]) if isinstance(peer, tuple) and peer else None
        address = parse_address(text)
        if address is not None and any(
            address in net for net in (*network.allowed, *network.trusted_proxies)
        ):
            return None
        return text or "unknown"

    def refuse_outsider(self, watched: _Watched, peer: str) -> None:
        self.connections.pop(watched, None)
        self._on_refused(None, "client is not in SINK_ALLOWED_NETWORKS", peer)

    def timed_out(self) -> None:
        self._on_refused(None, "request head not received in time", None)


class _Watched(asyncio.Protocol):
    """aiohttp's protocol, made once the peer passed the allow-list, plus the head deadline:
    armed when a connection opens and when bytes arrive on an idle one; it closes the
    connection unless a new request head was parsed in the meantime."""

    __slots__ = ("_armed_at", "_factory", "_guard", "_inner", "_timer")

    def __init__(self, factory: Callable[[], RequestHandler], guard: ConnectionGuard) -> None:
        self._factory = factory
        self._inner: RequestHandler | None = None
        self._guard = guard
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        peer = guard.outsider(transport)
        if peer is not None:  # closed before a byte is read: it holds no slot
            guard.refuse_outsider(self, peer)
            transport.close()
            return
        self._inner = self._factory()
        self._inner.connection_made(transport)
        self._arm()

    @property
    def idle(self) -> bool:
        """A keep-alive connection waiting for its next request (not a new one's first)."""
        inner = self._inner
        if inner is None or not inner._request_count or inner._request_in_progress:
            return False
        waiter = inner._waiter
        return not inner._messages and waiter is not None and not waiter.done()

    def close(self) -> None:
        if self._inner is not None:
            self._inner.force_close()

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        if self._timer is None and not inner._request_in_progress and not inner._messages:
            self._arm()
        inner.data_received(data)
        if self._timer is not None and inner._request_count != self._armed_at:
            self._timer.cancel()
            self._timer = None

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        self._guard.connections.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _arm(self) -> None:
        assert self._inner is not None
        self._armed_at = self._inner._request_count
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.read_timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        inner = self._inner
        if inner is None:
            return
        if inner._request_count == self._armed_at and not inner._request_in_progress:
            self._guard.timed_out()
            inner.force_close()


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
