"""The body budget: how many bytes of request bodies one ingress process buffers at once.

A body must be read whole before anything in it can be trusted: Easemob's signature is
``md5(callId + secret + timestamp)`` and ``callId`` and ``timestamp`` are fields *inside* the
JSON, so the signature can only be checked once the body has been read and parsed. Without a
bound, anyone (no secret needed) can open a few hundred connections and send 1 MiB bodies
slowly, and the process holds all of them. So every body reserves its bytes here before they
are buffered: its ``Content-Length`` up front when the request announces one, a chunked body
chunk by chunk as it streams. A request that does not fit gets a fast 503 and its connection
is closed, its body unread.

A quarter of the budget is kept for small bodies (up to :data:`SMALL_BODY`; Easemob's
callbacks are a few KiB): slow senders of large bodies can fill the rest, but not starve the
genuine callbacks of it.
"""

from __future__ import annotations

from aiohttp import web

from callback_sink.sink.errors import Rejected

#: A body up to this size may use the whole budget; a larger one only what
#: :data:`SMALL_SHARE` leaves of it.
SMALL_BODY = 64 * 1024
#: 1/SMALL_SHARE of the budget is kept for small bodies.
SMALL_SHARE = 4
#: The bytes one request holds of the budget.
HELD = web.RequestKey("body_bytes_held", int)


class BodyBudget:
    """Bytes of request bodies buffered by one process, against ``SINK_BODY_BUDGET_BYTES``."""

    __slots__ = ("large_limit", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: What bodies larger than :data:`SMALL_BODY` may hold between them.
        self.large_limit = limit - limit // SMALL_SHARE
        self.used = 0

    def take(self, request: web.Request, size: int, total: int) -> None:
        """Reserve ``size`` more bytes for ``request``'s body, ``total`` bytes long so far (or
        announced); raise a 503 :class:`Rejected` when they do not fit."""
        ceiling = self.limit if total <= SMALL_BODY else self.large_limit
        if self.used + size > ceiling:
            details: dict[str, object] = {"held": self.used, "wanted": size}
            raise Rejected(503, "body budget exhausted (SINK_BODY_BUDGET_BYTES)", details=details)
        self.used += size
        request[HELD] = request.get(HELD, 0) + size

    def release(self, request: web.Request) -> None:
        """Give back what ``request`` held (once its body is no longer needed)."""
        held = request.get(HELD, 0)
        if held:
            self.used -= held
            request[HELD] = 0
