"""Confirmed publishes on one aiormq channel, their frames written together once per tick.

aiormq's ``Channel.basic_publish`` takes the channel's lock, hands the publish's frames to the
connection's writer task and holds the lock until that task wrote them: under the ingress's
concurrent callbacks, one socket write, a lock hand-over, two task switches, a marshalling of
the constant ``Basic.Publish`` frame and two time-out scopes per callback, about a quarter of
the ingress's CPU (see ``docs/explanation/performance-round2.md``). :class:`Coalescer` keeps
the same protocol bookkeeping and drops the waiting:

1. :meth:`Coalescer.publish` numbers the publish with the channel's next delivery tag and
   registers its confirmation future in the channel's tables, exactly where aiormq's reader
   resolves it: an ack, a nack (``DeliveryError``), the return of the mandatory message
   (``PublishError``), a closed channel or connection (its exception) all reach the caller as
   they do through ``basic_publish``;
2. its frames (the cached ``Basic.Publish`` of the routing key, the content header, the body)
   are appended to a buffer, and the first publish of a tick schedules :meth:`Coalescer._flush`;
3. the flush hands the whole buffer to the writer as one frame payload: N publishes, one write.

**The rule that makes it safe:** every publish on the channel goes through its coalescer,
synchronously from tag to buffer. Publisher confirms count publishes in the order their
frames reach the broker; tags given out in buffer order and a buffer written in order keep
the two the same. The ingress's channel is its own (:class:`~ingress.publisher.Publisher`),
its other frames are RPCs (declarations, close), which take no tag, and a reopened channel
(reconnect, or one replaced for nacking) gets a new coalescer.

The confirm time-out is one sweep over the publishes in flight (:data:`SWEEP_INTERVAL`), not a
timer per publish: a publish unconfirmed after ``timeout`` seconds (at most one interval
later) raises ``TimeoutError``, as ``asyncio.timeout`` did.
"""

from __future__ import annotations

import asyncio
from collections import deque

import aiormq
from aiormq.abc import ChannelFrame, ConfirmationFrameType
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.frame import marshal
from pamqp.header import ContentHeader

#: How often the confirm deadlines are checked, seconds: a time-out fires at most this late.
SWEEP_INTERVAL = 0.1
#: Cached ``Basic.Publish`` frames (one per exchange and routing key: one per event name).
METHOD_CACHE_SIZE = 1024


class Coalescer:
    """The publishes of one aiormq channel opened with publisher confirms."""

    def __init__(self, channel: aiormq.Channel, timeout: float, owner: object = None) -> None:
        """``owner``: what the channel belongs to (the publisher's aio-pika channel)."""
        self.channel = channel
        self.owner = owner
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._buffer: list[bytes] = []
        self._backlog: deque[ChannelFrame] = deque()
        self._putting: asyncio.Task[None] | None = None
        self._methods: dict[tuple[str, str], bytes] = {}
        #: Unconfirmed publishes, oldest first, with their deadlines (one time-out: ordered).
        self._inflight: deque[tuple[float, asyncio.Future[ConfirmationFrameType]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self.channel.is_closed

    async def publish(
        self, body: bytes, *, exchange: str, routing_key: str, properties: spec.Basic.Properties
    ) -> ConfirmationFrameType:
        """Publish ``body`` as a mandatory message and await the broker's confirmation.
        ``properties`` must carry a ``message_id`` (a returned message is matched by it)."""
        channel = self.channel
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} closed")
        frames = self._frames(body, exchange, routing_key, properties)
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        message_id = properties.message_id
        assert message_id is not None
        confirmation: asyncio.Future[ConfirmationFrameType] = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag
        self._buffer.append(frames)
        if len(self._buffer) == 1:
            self._loop.call_soon(self._flush)
        self._inflight.append((self._loop.time() + self._timeout, confirmation))
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
        try:
            return await confirmation
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if confirmation.cancelled() and task is not None and not task.cancelling():
                # The sweep cancelled the confirmation, not somebody this task.
                raise TimeoutError(f"no publisher confirm within {self._timeout}s") from None
            raise
        finally:
            if channel.message_id_delivery_tag.get(message_id) == tag:
                del channel.message_id_delivery_tag[message_id]

    def _frames(
        self, body: bytes, exchange: str, routing_key: str, properties: spec.Basic.Properties
    ) -> bytes:
        """The wire bytes of one publish, as ``basic_publish`` marshals them."""
        number = self.channel.number
        method = self._methods.get((exchange, routing_key))
        if method is None:
            if len(self._methods) >= METHOD_CACHE_SIZE:
                self._methods.clear()
            publish = spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True)
            method = self._methods[exchange, routing_key] = marshal(publish, number)
        parts = [method, marshal(ContentHeader(properties=properties, body_size=len(body)), number)]
        size = self.channel.max_content_size  # no body frame for no body, as aiormq
        for start in range(0, len(body), size):
            parts.append(marshal(ContentBody(body[start : start + size]), number))
        return b"".join(parts)

    def _flush(self) -> None:
        """Hand this tick's frames to the connection's writer, in order, as one payload."""
        if not self._buffer:
            return
        if self.channel.is_closed:  # its close rejected these publishes' confirmations
            self._buffer.clear()
            return
        # With a drain future the writer waits for the socket after this write, as it does
        # for ``basic_publish``: a broker that reads slowly fills the writer's queue, not RAM.
        drained = self._loop.create_future()
        frame = ChannelFrame(b"".join(self._buffer), should_close=False, drain_future=drained)
        self._buffer.clear()
        if self._putting is None:
            try:
                self.channel.write_queue.put_nowait(frame)
                return
            except asyncio.QueueFull:
                pass
        # The writer is behind (a slow socket): later payloads queue behind this one.
        self._backlog.append(frame)
        if self._putting is None:
            self._putting = self._loop.create_task(self._put_backlog())

    async def _put_backlog(self) -> None:
        try:
            while self._backlog and not self.channel.is_closed:
                await self.channel.write_queue.put(self._backlog.popleft())
        finally:
            self._backlog.clear()
            self._putting = None

    def _sweep(self) -> None:
        """Cancel the confirmations past their deadline; come back while any is in flight."""
        self._sweeper = None
        inflight, now = self._inflight, self._loop.time()
        while inflight and (inflight[0][1].done() or inflight[0][0] <= now):
            _, confirmation = inflight.popleft()
            confirmation.cancel()  # a no-op on a settled one
        if inflight:
            self._sweeper = self._loop.call_later(SWEEP_INTERVAL, self._sweep)
