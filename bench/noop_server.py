"""The HTTP ceiling: an aiohttp app whose POST handler reads the body and answers 200 with
the ingress's body, nothing else. Same event loop choice as the ingress would make
(uvloop when installed). Usage: ``noop_server.py PORT``."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

OK_BODY = b'{"status":"ok"}'


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=OK_BODY, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_post("/callbacks", receive)
    app.router.add_get("/readyz", lambda _: asyncio.sleep(0, web.Response(text="ok")))
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        print=None,
        access_log=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
