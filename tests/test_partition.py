"""A group's callbacks always land in one partition; different groups spread out."""

from __future__ import annotations

from collections import Counter

from callback_sink.sink.partition import partition_key, partition_of
from callback_sink.testing import make_event


def test_every_callback_of_a_group_lands_in_the_same_partition() -> None:
    events = [make_event(name, group_id="42") for name in ("muc:create", "muc:apply", "muc:kick")]
    assert len({partition_of(e, 16) for e in events}) == 1


def test_a_conversation_is_one_key_in_either_direction() -> None:
    there = make_event("message:chat", from_="alice", to="bob")
    back = make_event("message:chat", from_="bob", to="alice")
    assert partition_key(there) == partition_key(back)


def test_groups_spread_over_the_partitions() -> None:
    counts = Counter(partition_of(make_event("muc:apply", group_id=str(g)), 16) for g in range(800))
    assert len(counts) == 16
    assert max(counts.values()) < 3 * 800 / 16
