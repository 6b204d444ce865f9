"""``Expect: 100-continue``: refuse a body before inviting it.

A client that sends ``Expect: 100-continue`` waits for ``100 Continue`` before it sends the
body. aiohttp's default answers ``100 Continue`` to any request, so a 100 MB upload was
invited, then refused with 413 after its first bytes arrived. The handler here answers from
the headers alone: 413 when ``Content-Length`` is over ``SINK_BODY_LIMIT``, 503 when the body
budget (:mod:`ingress.budget`) has no room for it right now, ``100 Continue`` otherwise. The
refusal is counted and logged as any other (:mod:`ingress.refusals`) and closes the
connection, the body never read. A request without a length (chunked) is invited and bounded
while it streams, as without ``Expect``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from callback_sink.ingress.network import forwarded_for
from callback_sink.sink.errors import Rejected

if TYPE_CHECKING:
    from callback_sink.ingress.app import Edge

ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def expect_continue(edge: Edge) -> ExpectHandler:
    """The ``expect_handler`` of a route that reads a body with ``edge``'s limits."""

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None  # HTTP/1.0 has no 100 Continue: the client sends the body anyway
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:64]}")
        started = time.perf_counter()
        try:
            refuse_early(request, edge)
        except Rejected as exc:
            remote = edge.network.client(request.remote, forwarded_for(request.headers)).text
            return edge.refusals.respond(exc, remote, started)
        await request.writer.write(CONTINUE)
        request.writer.output_size = 0  # the answer proper has not started yet
        return None

    return handle


def refuse_early(request: web.Request, edge: Edge) -> None:
    """Raise the :class:`Rejected` that reading the announced body would end in: 413 over
    the limit, 503 when the budget cannot hold it now (checked, not kept: the body reserves
    its bytes when it is read)."""
    length = request.content_length
    if length is None:
        return
    limit = edge.settings.body_limit
    if length > limit:
        details: dict[str, object] = {"content_length": length, "body_limit": limit}
        raise Rejected(413, "body exceeds SINK_BODY_LIMIT", details=details)
    edge.budget.take(request, length, length)
    edge.budget.release(request)
