"""Acks batched per tick (:mod:`worker.acks`): one ``basic.ack multiple=True`` per run of
settled deliveries, and never an ack that covers a delivery still in hand. A fake channel
plays the broker's side: it keeps the outstanding tags and fails on any ack the real one
would refuse (an unknown or already settled tag) or that covers a delivery not settled."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from callback_sink.worker.acks import Acks


@dataclass(eq=False)
class Broker:
    """One channel's outstanding deliveries, as RabbitMQ keeps them."""

    outstanding: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)  # settled by the worker, ack may be pending
    frames: list[tuple[int, bool]] = field(default_factory=list)

    def ack(self, tag: int, multiple: bool) -> None:
        assert tag in self.outstanding, f"unknown delivery tag {tag}"
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        assert covered <= self.done, f"ack {tag} covers unsettled {sorted(covered - self.done)}"
        self.outstanding -= covered
        self.frames.append((tag, multiple))

    def nack(self, tag: int) -> None:
        assert tag in self.outstanding
        self.outstanding.discard(tag)


@dataclass
class Message:
    delivery_tag: int
    channel: Broker

    async def ack(self, multiple: bool = False) -> None:
        await asyncio.sleep(0)
        self.channel.ack(self.delivery_tag, multiple)


async def settle_all(acks: Acks, broker: Broker, count: int, seed: int) -> None:
    """``count`` deliveries, each settled after a random number of ticks; every seventh
    is nacked instead of acked."""
    rng = random.Random(seed)
    broker.outstanding = set(range(1, count + 1))

    async def one(tag: int) -> None:
        for _ in range(rng.randrange(4)):
            await asyncio.sleep(0)
        message = Message(tag, broker)
        broker.done.add(tag)
        if tag % 7 == 0:
            broker.nack(tag)
            acks.settled(message)  # type: ignore[arg-type]
        else:
            await acks.ack(message)  # type: ignore[arg-type]

    await asyncio.gather(*(one(tag) for tag in range(1, count + 1)))


@pytest.mark.parametrize("seed", range(20))
async def test_batched_acks_settle_every_delivery_once_and_cover_none_in_hand(seed: int) -> None:
    broker = Broker()
    await settle_all(Acks(), broker, 200, seed)
    assert broker.outstanding == set()
    assert any(multiple for _, multiple in broker.frames)  # some went out together


async def test_a_delivery_in_hand_ends_the_run_and_the_acks_above_it_go_alone_later() -> None:
    broker = Broker(outstanding={1, 2, 3, 4})
    acks = Acks()
    broker.done |= {1, 2, 4}
    await asyncio.gather(*(acks.ack(Message(t, broker)) for t in (1, 2, 4)))  # type: ignore[arg-type]
    assert broker.frames == [(2, True), (4, False)]  # 4 waited, then went alone
    assert broker.outstanding == {3}
    broker.done.add(3)
    await acks.ack(Message(3, broker))  # type: ignore[arg-type]
    assert broker.outstanding == set()


async def test_an_ack_held_above_a_gap_goes_with_the_run_once_the_gap_settles() -> None:
    broker = Broker(outstanding={1, 2, 3}, done={1, 2, 3})
    acks = Acks()
    later = asyncio.create_task(acks.ack(Message(3, broker)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.gather(*(acks.ack(Message(t, broker)) for t in (1, 2)), later)  # type: ignore[arg-type]
    assert broker.frames == [(3, True)]


async def test_a_new_channel_starts_a_new_run() -> None:
    first, second = Broker(outstanding={1, 2}, done={1, 2}), Broker(outstanding={1}, done={1})
    acks = Acks()
    await asyncio.gather(*(acks.ack(Message(t, first)) for t in (1, 2)))  # type: ignore[arg-type]
    await acks.ack(Message(1, second))  # type: ignore[arg-type]
    assert (first.frames, second.frames) == ([(2, True)], [(1, False)])


async def test_a_failed_ack_reaches_every_caller_it_covered() -> None:
    class Closed(Message):
        async def ack(self, multiple: bool = False) -> None:
            raise RuntimeError("channel closed")

    broker = Broker(outstanding={1, 2}, done={1, 2})
    acks = Acks()
    results = await asyncio.gather(
        *(acks.ack(Closed(t, broker)) for t in (1, 2)),  # type: ignore[arg-type]
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
