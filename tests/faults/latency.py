"""A TCP proxy that adds latency each way: a slow network between workers and Redis.

Every chunk read from one side is written to the other ``delay()`` seconds after it arrived
(never before the chunk ahead of it), so the proxy adds latency, not a bandwidth limit: a
pipeline of commands is late as a whole, not once per command.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from callback_sink.testing.ports import free_port


class LatencyProxy:
    """``async with LatencyProxy(port, low, high)``: ``127.0.0.1:proxy.port`` reaches
    ``127.0.0.1:port`` with ``low``..``high`` seconds added each way."""

    def __init__(self, upstream_port: int, low: float, high: float) -> None:
        self.upstream_port = upstream_port
        self.delay: Callable[[], float] = lambda: random.uniform(low, high)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, sink))
        try:
            due = 0.0
            while chunk := await source.read(65536):
                due = max(due, time.monotonic() + self.delay())
                queue.put_nowait((due, chunk))
            queue.put_nowait((due, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(Exception):
                sink.close()

    @staticmethod
    async def _send(queue: asyncio.Queue[tuple[float, bytes]], sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not chunk:
                    sink.write_eof()
                    return
                sink.write(chunk)
                await sink.drain()
