"""The coalescing publish path (:mod:`ingress.coalesce`): the wire bytes of ``basic_publish``,
confirms matched to the right publishes on a real broker (acks, nacks, returns), a confirm
time-out, a writer that is behind, a closed channel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from callback_sink.ingress import coalesce
from callback_sink.ingress.coalesce import Coalescer

QUEUE_ROOM = 150  # messages a full queue takes before it nacks (x-max-length)


def _properties(call_id: str, name: str = "muc:apply") -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=0,
        message_id=call_id,
        headers={"x-sink-event": name},
    )


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aiormq.Channel]:
    connection = await aio_pika.connect(amqp_url)
    robust = await connection.channel(publisher_confirms=True, on_return_raises=True)
    underlay = await robust.get_underlay_channel()
    assert isinstance(underlay, aiormq.Channel)
    yield underlay
    await connection.close()


@pytest.fixture
async def bounded_queue(channel: aiormq.Channel, prefix: str) -> AsyncIterator[str]:
    """A queue bound to a direct exchange, which nacks publishes once it holds
    :data:`QUEUE_ROOM` messages (a classic queue: it counts exactly, a quorum queue lazily)."""
    exchange, queue = f"{prefix}.x", f"{prefix}.q"
    await channel.exchange_declare(exchange, exchange_type="direct", auto_delete=True)
    arguments: dict[str, Any] = {"x-max-length": QUEUE_ROOM, "x-overflow": "reject-publish"}
    await channel.queue_declare(queue, durable=True, arguments=arguments)
    await channel.queue_bind(queue, exchange, routing_key="k")
    yield exchange
    await channel.queue_delete(queue)


def test_the_frames_are_those_basic_publish_writes() -> None:
    """The same bytes as aiormq's ``ChannelFrame.marshall`` of Publish, header and body
    frames, for a body of one frame and one split over several."""
    loop = asyncio.new_event_loop()
    try:
        fake = _FakeChannel(max_content_size=4096)
        coalescer = loop.run_until_complete(_made(fake))
        bodies = (b"", b'{"callId":"a"}', bytes(random.randrange(256) for _ in range(10_000)))
        for body in bodies:
            properties = _properties("call-1")
            ours = coalescer._frames(body, "ex", "k", properties)
            chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]  # none if empty
            theirs = ChannelFrame.marshall(
                channel_number=fake.number,
                frames=[
                    spec.Basic.Publish(exchange="ex", routing_key="k", mandatory=True),
                    ContentHeader(properties=properties, body_size=len(body)),
                    *(ContentBody(chunk) for chunk in chunks),
                ],
            ).payload
            assert ours == theirs
    finally:
        loop.close()


async def _made(fake: _FakeChannel, confirm_timeout: float = 5.0) -> Coalescer:
    return Coalescer(fake, confirm_timeout)  # type: ignore[arg-type]


async def test_acks_and_nacks_reach_exactly_the_publishes_the_broker_took_or_refused(
    channel: aiormq.Channel, bounded_queue: str, prefix: str
) -> None:
    """Publishes in bursts of concurrent callers, over several ticks: the queue takes them
    until it holds :data:`QUEUE_ROOM`, which falls inside a burst, and nacks the rest. If
    tags ever drifted from the order on the wire, an acked publish would be missing from the
    queue or a nacked one in it."""
    coalescer = Coalescer(channel, timeout=30)
    outcomes: dict[str, str] = {}

    async def one(call_id: str) -> None:
        try:
            await coalescer.publish(call_id.encode(), exchange=bounded_queue, routing_key="k",
                                    properties=_properties(call_id))  # fmt: skip
            outcomes[call_id] = "ack"
        except DeliveryError:
            outcomes[call_id] = "nack"

    ids = [f"{prefix}-{i}" for i in range(400)]
    for burst in range(0, len(ids), 64):
        await asyncio.gather(*(one(i) for i in ids[burst : burst + 64]))
    acked = {i for i, outcome in outcomes.items() if outcome == "ack"}
    assert len(outcomes) == len(ids)
    assert len(acked) == QUEUE_ROOM

    stored: dict[str, aiormq.abc.DeliveredMessage] = {}
    for _ in range(len(ids) + 1):
        got = await channel.basic_get(f"{prefix}.q", no_ack=True)
        if isinstance(got.delivery, spec.Basic.GetEmpty):
            break
        stored[got.header.properties.message_id or ""] = got
    assert set(stored) == acked
    sample = stored[min(acked)]
    assert sample.body == min(acked).encode()
    assert sample.header.properties.delivery_mode == 2
    assert (sample.header.properties.headers or {})["x-sink-event"] == "muc:apply"
    assert not channel.message_id_delivery_tag  # every publish forgot its message id


async def test_a_returned_message_raises_and_the_next_publish_is_confirmed(
    channel: aiormq.Channel, bounded_queue: str, prefix: str
) -> None:
    coalescer = Coalescer(channel, timeout=30)
    with pytest.raises(PublishError):
        await coalescer.publish(b"{}", exchange=bounded_queue, routing_key="unbound",
                                properties=_properties(f"{prefix}-returned"))  # fmt: skip
    confirmation = await coalescer.publish(
        b"{}", exchange=bounded_queue, routing_key="k", properties=_properties(f"{prefix}-ok")
    )
    assert isinstance(confirmation, spec.Basic.Ack)


async def test_a_closed_channel_refuses_at_once(channel: aiormq.Channel, prefix: str) -> None:
    coalescer = Coalescer(channel, timeout=30)
    await channel.close()
    assert coalescer.closed
    with pytest.raises(ChannelInvalidStateError):
        await coalescer.publish(b"{}", exchange="", routing_key="k",
                                properties=_properties(f"{prefix}-late"))  # fmt: skip


class _FakeChannel:
    """The attributes of an aiormq channel the coalescer uses, for a broker that never
    answers (pure logic: time-outs and a writer that is behind)."""

    number = 1

    def __init__(self, max_content_size: int = 131_064, queue_size: int = 10) -> None:
        self.max_content_size = max_content_size
        self.delivery_tag = 0
        self.confirmations: dict[int, asyncio.Future[Any]] = {}
        self.message_id_delivery_tag: dict[str, int] = {}
        self.is_closed = False
        self._queue_size = queue_size
        self._write_queue: asyncio.Queue[ChannelFrame] | None = None

    @property
    def write_queue(self) -> asyncio.Queue[ChannelFrame]:
        if self._write_queue is None:
            self._write_queue = asyncio.Queue(self._queue_size)
        return self._write_queue

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()


async def test_an_unconfirmed_publish_times_out_and_a_cancelled_caller_stays_cancelled() -> None:
    fake = _FakeChannel()
    coalescer = await _made(fake, confirm_timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await coalescer.publish(b"{}", exchange="", routing_key="k", properties=_properties("t"))
    # Due after the time-out plus at most one sweep; ten times that is the generous bound.
    assert loop.time() - started < 10 * (0.2 + coalesce.SWEEP_INTERVAL)
    assert fake.confirmations[1].cancelled()  # a late ack is then ignored by aiormq, quietly

    caller = asyncio.create_task(
        coalescer.publish(b"{}", exchange="", routing_key="k", properties=_properties("c"))
    )
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not fake.message_id_delivery_tag


async def test_a_writer_that_is_behind_gets_every_payload_in_order() -> None:
    """With the writer's queue full, later ticks' payloads wait behind, in order."""
    fake = _FakeChannel(queue_size=1)
    coalescer = await _made(fake, confirm_timeout=30)
    callers = []
    for tick in range(4):
        callers.append(asyncio.create_task(coalescer.publish(
            f"body-{tick}".encode(), exchange="", routing_key="k",
            properties=_properties(f"id-{tick}"),
        )))  # fmt: skip
        await asyncio.sleep(0)  # the caller registers and buffers
        await asyncio.sleep(0)  # the flush of that tick runs
    payloads = []
    while len(payloads) < 4:
        payloads.append((await asyncio.wait_for(fake.write_queue.get(), 10)).payload)
    assert [tag for tag in fake.confirmations] == [1, 2, 3, 4]
    for tick, payload in enumerate(payloads):
        assert f"body-{tick}".encode() in payload and f"id-{tick}".encode() in payload
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
