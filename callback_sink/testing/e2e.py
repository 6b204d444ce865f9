"""A real ingress and a real worker on the local RabbitMQ, in this process, for one test.

:meth:`RunningSink.start` runs the production :func:`~callback_sink.service.run_ingress` on a
free port and a production :class:`~worker.consumer.Worker`, both on a topology of their own
(a uuid ``SINK_TOPOLOGY_PREFIX``), with a fresh secret; every other setting comes from the
environment as for ``callback-sink run``. The test posts signed callbacks to ``url`` and
waits until its handlers finished them; :meth:`RunningSink.stop` deletes the topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aio_pika.exceptions import AMQPError
from yarl import URL

from callback_sink.handlers.registry import Handler, HandlerFunc, Registry
from callback_sink.service import run_ingress
from callback_sink.sink.amqp import connect_first
from callback_sink.sink.events import Event, decode
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context
from callback_sink.sink.topology import Topology, delay_steps_ms, delete
from callback_sink.testing.events import make_body, sign_event
from callback_sink.testing.ports import free_port
from callback_sink.testing.tester import HandlerRef, HandlerSource, handler_name, registry_of
from callback_sink.worker.consumer import Worker
from callback_sink.worker.dedup import MemoryStore

#: How long the ingress may take to listen, seconds.
LISTEN_TIMEOUT = 15.0


class BrokerUnreachable(Exception):
    """The end-to-end fixture needs RabbitMQ and could not reach it."""


@dataclass
class RunningSink:
    """An ingress and a worker for one test: post to ``url``, signed with ``secret``."""

    url: str
    secret: str
    settings: Settings
    #: ``(handler name, event)`` for every handler run that succeeded, in order.
    handled: list[tuple[str, Event]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, repr=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)
    _worker: Worker | None = field(default=None, repr=False)
    _http: aiohttp.ClientSession | None = field(default=None, repr=False)

    @classmethod
    async def start(
        cls, *handlers: HandlerSource, use_entry_points: bool | None = None, **overrides: Any
    ) -> RunningSink:
        """Start ingress and worker with ``handlers`` (default: the installed entry points);
        ``overrides`` replace settings (``retry_delays=(0.2,)``, ``max_attempts=2`` …).
        Raises :class:`BrokerUnreachable` at once when RabbitMQ does not answer."""
        base = Settings.from_env()
        await _check_broker(base)
        defaults: dict[str, Any] = {
            "topology_prefix": f"sink-e2e-{uuid.uuid4().hex[:12]}",
            "host": "127.0.0.1",
            "port": free_port(),
            "secrets": (uuid.uuid4().hex,),
            "spool_dir": tempfile.mkdtemp(prefix="sink-e2e-spool-"),
            "dedup_url": "memory://",
            "drain_delay": 0.0,
        }
        settings = replace(base, **{**defaults, **overrides})
        url = f"http://{settings.host}:{settings.port}{settings.path}"
        sink = cls(url, settings.secrets[0], settings)
        try:
            await sink._start(registry_of(handlers, use_entry_points))
        except BaseException:
            await sink.stop()
            raise
        return sink

    async def _start(self, registry: Registry) -> None:
        self._http = aiohttp.ClientSession()
        self._tasks.append(asyncio.create_task(run_ingress(self.settings, self._stop)))
        await self._wait_listening()
        counted = [
            Handler(h.name, self._counting(h), h.subscriptions, h.options)
            for h in registry.handlers
        ]
        registry = Registry(counted, registry.shutdown_hooks, registry.startup_hooks)
        worker = Worker(self.settings, registry, MemoryStore())
        await worker.start()  # on failure it closes what it opened
        self._worker = worker

    def _counting(self, handler: Handler) -> HandlerFunc:
        """``handler`` that also records each success, for :meth:`wait_handled`."""

        async def run(event: Event) -> None:
            await handler.func(event)
            async with self._changed:
                self.handled.append((handler.name, event))
                self._changed.notify_all()

        return run

    async def _wait_listening(self) -> None:
        assert self._http is not None
        health = str(URL(self.url).with_path("/healthz"))
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while True:
            ingress = self._tasks[0]
            if ingress.done():
                ingress.result()  # raises why it stopped
                raise RuntimeError("the ingress stopped before listening")
            with contextlib.suppress(aiohttp.ClientError):
                async with self._http.get(health) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the ingress did not listen on {health} within {LISTEN_TIMEOUT}s"
                )
            await asyncio.sleep(0.05)

    async def post(self, callback: Event | bytes) -> int:
        """POST an event (signed with this sink's secret) or a ready body; the HTTP status."""
        assert self._http is not None
        body = sign_event(callback, self.secret) if isinstance(callback, Event) else callback
        headers = {"Content-Type": "application/json"}
        async with self._http.post(self.url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def send(self, name: str, **overrides: Any) -> Event:
        """Build a callback (as :func:`make_event`), POST it, expect 200, return it."""
        body = make_body(name, secret=self.secret, **overrides)
        status = await self.post(body)
        if status != 200:
            raise AssertionError(f"the ingress answered {status} to a {name} callback")
        return decode(body)

    async def wait_handled(
        self, count: int, *, handler: HandlerRef | None = None, within: float = 20.0
    ) -> list[tuple[str, Event]]:
        """Wait until ``count`` handler runs (of ``handler``, or of any) succeeded; return them."""
        name = None if handler is None else handler_name(handler)

        def found() -> list[tuple[str, Event]]:
            return [(h, e) for h, e in self.handled if name is None or h == name]

        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(found()) >= count)

        try:
            await asyncio.wait_for(enough(), within)
        except TimeoutError:
            raise AssertionError(
                f"{len(found())} of {count} expected handler runs within {within}s"
            ) from None
        return found()

    async def stop(self) -> None:
        """Stop the worker and the ingress, delete the topology and the spool."""
        self._stop.set()
        if self._worker is not None:
            await self._worker.stop()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        if self._http is not None:
            await self._http.close()
        await _delete_topology(self.settings)
        shutil.rmtree(self.settings.spool_dir, ignore_errors=True)


async def _check_broker(settings: Settings) -> None:
    try:
        connection = await connect_first(
            settings.amqp_urls, per_node=5, ssl_context=amqp_context(settings)
        )
    except Exception as exc:
        where = URL(settings.amqp_urls[0])
        raise BrokerUnreachable(
            f"RabbitMQ is not reachable at {where.host}:{where.port} (SINK_AMQP_URL): "
            f"{type(exc).__name__}: {exc}; the end-to-end fixture needs a running broker"
        ) from None
    await connection.close()


async def _delete_topology(settings: Settings) -> None:
    delays = delay_steps_ms(settings.retry_delays)
    with contextlib.suppress(AMQPError, OSError):
        connection = await connect_first(
            settings.amqp_urls, per_node=5, ssl_context=amqp_context(settings)
        )
        try:
            await delete(await connection.channel(), Topology.of(settings), delays)
        finally:
            await connection.close()
