"""The ingress as production serves it (its own runner: connection cap, head deadline), on a
free port, for tests of the HTTP edge."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from callback_sink.ingress.app import create_app, make_runner
from callback_sink.ingress.presend import install
from callback_sink.sink.presend import PresendFunc
from callback_sink.sink.settings import Settings

Client = TestClient[Any, Any]
Serve = Callable[..., Awaitable[Client]]
#: Starts an ingress serving both routes (callbacks and pre-send) with a pre-send chain.
ServeBoth = Callable[[Sequence[PresendFunc], Settings], Awaitable[Client]]


class IngressServer(TestServer):
    """A test server run by :func:`ingress.app.make_runner`."""

    async def _make_runner(self, **kwargs: Any) -> Any:
        return make_runner(self.app, **kwargs)


async def serving(settings: Settings) -> AsyncIterator[Serve]:
    """Start ingresses with setting overrides, each with its own spool; close them after."""
    clients: list[Client] = []

    async def start(**overrides: Any) -> Client:
        spool = str(Path(settings.spool_dir) / str(len(clients)))
        client = TestClient(
            IngressServer(create_app(replace(settings, spool_dir=spool, **overrides)))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@contextlib.asynccontextmanager
async def serving_both() -> AsyncIterator[ServeBoth]:
    """Start ingresses serving the callback and the pre-send routes; close them after."""
    clients: list[Client] = []

    async def start(chain: Sequence[PresendFunc], settings: Settings) -> Client:
        app = create_app(settings)
        install(app, list(chain))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    try:
        yield start
    finally:
        for client in clients:
            await client.close()
