"""The worker process: connect, declare, consume, and stop gracefully.

Each delivery runs the visible pipeline of :meth:`Worker.handle`:
decode → claim + dispatch (:mod:`worker.pipeline`) → decide (:mod:`worker.decide`) →
settle (:mod:`worker.settle`, the one owner of every ack and nack).

At start-up the worker waits for the broker and the dedup store (retrying with backoff for
``SINK_STARTUP_TIMEOUT_S``; a refused login or an unknown vhost or database is not retried),
then awaits the handlers' ``@on_startup`` hooks, and only then
consumes; any of these failing raises :class:`StartupError`: one line, a non-zero exit.

The broker is the first node of ``SINK_AMQP_URL`` that answers; when that node dies the
robust connection moves on to the next (:mod:`sink.amqp`), its channel restores the prefetch,
the declarations and the consumer there, and the deliveries that were in hand are redelivered
by the broker (their acks cannot reach it any more) and deduplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from structlog.contextvars import bind_contextvars, reset_contextvars

from callback_sink.handlers.registry import Registry
from callback_sink.sink import headers, logs
from callback_sink.sink.errors import DecodeError, DedupUnavailable, StartupError
from callback_sink.sink.events import decode
from callback_sink.sink.metrics import WorkerMetrics
from callback_sink.sink.permanent import permanent
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context
from callback_sink.sink.topology import Topology, declare
from callback_sink.worker import inbox, single
from callback_sink.worker.channel import ChannelWatch
from callback_sink.worker.crashloop import epoch_of
from callback_sink.worker.decide import Policy, decide
from callback_sink.worker.dedup import DedupStore
from callback_sink.worker.gate import Gate
from callback_sink.worker.leases import Leases
from callback_sink.worker.link import BrokerLink
from callback_sink.worker.liveness import Liveness
from callback_sink.worker.ordered import Partitions
from callback_sink.worker.ordered import in_place as in_place_run
from callback_sink.worker.pipeline import DeliveryResult, Result, RunPolicy, dispatch
from callback_sink.worker.settle import Settler, delivery_of, settled_of
from callback_sink.worker.store_health import StoreHealth, check_at_start

log = logs.get("worker")

T = TypeVar("T")

#: After SINK_SHUTDOWN_TIMEOUT, how long the handlers cancelled then may take to unwind, seconds.
CANCEL_GRACE = 5.0
#: Start-up retry backoff: first wait and cap, seconds.
STARTUP_BACKOFF = (0.5, 5.0)


def policy_of(settings: Settings) -> Policy:
    return Policy(settings.max_attempts, settings.retry_delays)


def run_policy_of(settings: Settings, registry: Registry, store: DedupStore) -> RunPolicy:
    slots = {
        h.name: asyncio.Semaphore(h.options.concurrency)
        for h in registry.handlers
        if h.options.concurrency is not None
    }
    leases = Leases(store, settings.claim_lease, Liveness.of(store, settings))
    return RunPolicy(
        settings.handler_timeout, settings.dedup_ttl, leases, settings.max_deliveries, slots,
        crash_deaths=settings.crash_loop_deaths,
        inbox=inbox.inbox_of(settings, registry),  # ConfigError: transactional, no SINK_INBOX_URL
    )  # fmt: skip


def replay_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    """``replay: true`` and the dead reason it came from, for the log lines of a delivery that
    ``dlq replay`` put back (and of its retries); nothing for any other delivery."""
    found = message.headers or {}
    if headers.REPLAYED not in found:
        return {}
    reason = found.get(headers.REPLAY_OF, "")
    return {"replay": True, "replay_of": reason.decode() if isinstance(reason, bytes) else reason}


async def with_retries(what: str, attempt: Callable[[], Awaitable[T]], patience: float) -> T:
    """``attempt()`` until it succeeds, with logged backoff, for at most ``patience`` seconds;
    then :class:`StartupError` naming ``what`` and the last error. A permanent error (a refused
    login, an unknown vhost or database: :mod:`sink.permanent`) raises at once."""
    timeout = patience
    deadline = time.monotonic() + timeout
    delay, cap = STARTUP_BACKOFF
    while True:
        try:
            return await attempt()
        except (TimeoutError, OSError, AMQPError, DedupUnavailable, *inbox.RETRIED) as exc:
            if (reason := permanent(exc)) is not None:  # a setting to fix: waiting cannot help
                raise StartupError(f"{what}: {reason} (not retried)") from None
            error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"{what} did not answer within SINK_STARTUP_TIMEOUT_S={timeout:g}s ({error})"
                ) from None
            log.warning("worker.waiting", dependency=what, error=error, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)


class Worker:
    """Consumes the work queue; ``async with Worker(...)`` starts and stops it."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: DedupStore,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.store = store
        #: Where handler outcomes are counted (by default a registry of this worker's own).
        self.metrics = metrics or WorkerMetrics()
        self.metrics.bind(h.name for h in registry.handlers)
        self.topology = Topology.of(settings)
        self.link = BrokerLink(amqp_context(settings))  # ``link.up``: connected, restored
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queues: list[tuple[AbstractQueue, Callable[[AbstractIncomingMessage], Any]]] = []
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._partitions = Partitions()
        self._settler: Settler | None = None
        self._policy = policy_of(settings)
        self._run_policy = run_policy_of(settings, registry, store)
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._gate = Gate()
        self.channel_watch = ChannelWatch(self.metrics, self._gate)  # closed by the broker?
        self._inflight: set[asyncio.Task[None]] = set()
        self.store_health = StoreHealth(store, self._cancel, self._consume, lambda: self.stopping)
        #: A stop began: no message is taken any more, handlers in flight finish.
        self.stopping = False
        #: Set once the first consume passed its guard (:mod:`.single`): no run before it.
        self._admitted = asyncio.Event()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Wait for the broker and the dedup store, run the start-up hooks, then consume."""
        timeout = self.settings.startup_timeout_s
        self._connection = await with_retries(
            "RabbitMQ (SINK_AMQP_URL)", lambda: self.link.connect(self.settings.amqp_urls), timeout
        )
        try:
            await with_retries(
                "the dedup store (SINK_DEDUP_URL)", lambda: check_at_start(self.store), timeout
            )
            await inbox.start_with(self._run_policy.inbox, with_retries, timeout)
            await self.registry.startup()
        except BaseException:
            await self._close()
            raise
        channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        self._channel = channel
        self.channel_watch.watch(channel)
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        await declare(channel, self.topology)
        self._settler = Settler(
            channel, self.topology, self.metrics, log_ok=self.settings.log_accepted
        )
        # ensure=True declares (passively) through the robust channel, which then restores
        # the queue and its consumer after a reconnection; ensure=False would not.
        work = await channel.get_queue(self.topology.work_queue, ensure=True)
        self._queues = [(work, self._on_message)]
        for name in self.topology.partition_queues:  # ordered mode
            queue = await channel.get_queue(name, ensure=True)
            self._queues.append((queue, functools.partial(self._on_partition, name)))
        await self._consume_first()
        log.info(
            "worker.started",
            queue=self.topology.work_queue,
            dedup=self.store.kind,
            exclusive=self.store.single_consumer,
            partitions=self.topology.partitions,
            handlers=[h.name for h in self.registry.handlers],
            prefetch=self.settings.prefetch,
            concurrency=self.settings.concurrency,
        )
        self._admitted.set()

    @property
    def consuming(self) -> bool:
        """Taking messages: started, not stopping nor paused, its channel open (:mod:`.channel`)."""
        return bool(self._consumers) and not self.stopping and self.channel_watch.open

    async def _consume(self) -> None:
        for queue, callback in self._queues:
            self._consumers.append((queue, await queue.consume(self.channel_watch.track(callback))))

    async def _consume_first(self) -> None:
        """The first consume, guarded: a memory:// worker is its queues' only consumer."""
        assert self._connection is not None and self._channel is not None
        queues = [queue for queue, _ in self._queues]
        if self.store.single_consumer:
            await single.acquire(self._channel, self.topology, queues)
            await self._consume()
            return
        await single.check_unlocked(self._connection, self.topology)
        await self._consume()
        try:
            await single.check_unlocked(self._connection, self.topology)
        except StartupError:
            await self._cancel()
            raise

    async def _cancel(self) -> None:
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            with contextlib.suppress(AMQPError, ChannelInvalidStateError, RuntimeError):
                await queue.cancel(tag)

    async def _on_partition(self, queue: str, message: AbstractIncomingMessage) -> None:
        """Ordered mode: one callback of a partition at a time, in delivery order."""
        async with self._partitions.lock(queue):
            await self._on_message(message, in_place=True)

    async def stop(self) -> None:
        """Stop taking messages, let running handlers finish (bounded), then close."""
        self.stopping = True
        self._admitted.set()  # waiting deliveries see stopping and go back to the queue
        await self.store_health.stop()
        await self._cancel()
        if self._inflight:
            log.info("worker.draining", inflight=len(self._inflight))
            _, pending = await asyncio.wait(
                set(self._inflight), timeout=self.settings.shutdown_timeout
            )
            for task in pending:
                task.cancel()
            if pending:
                log.warning("worker.drain_timeout", cancelled=len(pending))
                await asyncio.wait(pending, timeout=CANCEL_GRACE)
        await self._close()
        log.info("worker.stopped")

    async def _close(self) -> None:
        await self._run_policy.leases.close()
        await inbox.close(self._run_policy.inbox)
        if self._connection is not None:
            await self._connection.close()
        await self.registry.shutdown()
        await self.store.close()

    async def _on_message(self, message: AbstractIncomingMessage, in_place: bool = False) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            async with self._slots:
                if not self._admitted.is_set():
                    await self._admitted.wait()
                if self.stopping:  # prefetched but not started: let another worker have it
                    assert self._settler is not None
                    await self._settler.requeue(message)
                    return
                if self.channel_watch.suspect(message):
                    async with self._gate.alone():
                        await self.handle(message, in_place, alone=True)
                else:
                    ticket = await self._gate.enter()
                    try:
                        await self.handle(message, in_place)
                    finally:
                        self._gate.leave(ticket)
        finally:
            self._inflight.discard(task)

    async def handle(
        self, message: AbstractIncomingMessage, in_place: bool = False, alone: bool = False
    ) -> None:
        """decode → claim + dispatch → decide → settle, for one delivery. ``in_place``
        (ordered mode): retries and waits happen here, holding the partition. ``alone``:
        nothing else in flight (a suspect: :mod:`.crashloop`)."""
        settler = self._settler
        assert settler is not None
        try:
            event = decode(message.body)
        except DecodeError as exc:
            await settler.undecodable(message, exc)
            return
        delivery = delivery_of(message)

        async def run(settled: frozenset[str]) -> DeliveryResult:
            ran = await dispatch(
                event, self.registry.for_event(event.name), self.store, self._run_policy,
                settled=settled, alone=alone, epoch=epoch_of(message.headers),
            )  # fmt: skip
            if ran.store_unavailable:
                self._store_unreachable(ran)
            return ran

        # bound by token and reset: bound_contextvars() copies the whole context first
        tokens = bind_contextvars(call_id=event.call_id, event_name=event.name,
                                  **replay_of(message))  # fmt: skip
        try:
            try:
                if in_place:
                    final = await in_place_run(
                        message, run, settled_of(message), delivery, self._policy, settler,
                        lambda: self.stopping,
                    )  # fmt: skip
                    if final is None:
                        await settler.requeue(message)
                        return
                    ran, delivery, decision = final
                else:
                    ran = await run(settled_of(message))
                    decision = decide(ran, delivery, self._policy)
            except Exception as exc:  # a bug of ours: never leave the message unsettled
                log.error("callback.dispatch_failed", error_type=type(exc).__name__,
                          error=str(exc), exc_info=exc)  # fmt: skip
                await settler.requeue(message)
                return
            await settler.settle(message, ran, delivery, decision)
        finally:
            reset_contextvars(**tokens)

    def _store_unreachable(self, ran: DeliveryResult) -> None:
        """Stop taking messages until the dedup store takes writes again (:mod:`.store_health`;
        the message itself is deferred: it comes back after a delay, with what already ran)."""
        error = next(str(r.error) for r in ran.results if r.result is Result.UNAVAILABLE)
        self.store_health.unavailable(error)
