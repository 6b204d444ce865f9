"""Both dedup stores keep per-handler claims: atomic, leased, and marked done with a TTL."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any

import pytest

from callback_sink.sink.events import from_document
from callback_sink.worker.dedup import ClaimRequest, DedupStore, MemoryStore, State, new_token
from callback_sink.worker.redis_store import RedisStore
from tests.waiting import until


def ask(
    key: str, kind: str, handlers: list[str], lease: float, runs: int, call_id: str
) -> ClaimRequest:
    return ClaimRequest(key, call_id, kind, handlers, lease, bind_ttl=60, max_runs=runs)


async def test_the_first_claim_wins_and_a_live_lease_makes_others_wait(store: DedupStore) -> None:
    first = await store.claim("call-1", "h", lease=30)
    second = await store.claim("call-1", "h", lease=30)
    assert first.state is State.CLAIMED
    assert second.state is State.BUSY


async def test_a_done_mark_makes_every_later_claim_a_duplicate(store: DedupStore) -> None:
    claim = await store.claim("call-1", "h", lease=30)
    await store.done("call-1", "h", claim, ttl=60)
    assert (await store.claim("call-1", "h", lease=30)).state is State.DONE


async def test_marks_are_per_handler(store: DedupStore) -> None:
    claim = await store.claim("call-1", "a", lease=30)
    await store.done("call-1", "a", claim, ttl=60)
    assert (await store.claim("call-1", "b", lease=30)).state is State.CLAIMED


async def test_a_released_claim_can_be_taken_again(store: DedupStore) -> None:
    claim = await store.claim("call-1", "h", lease=30)
    await store.release("call-1", "h", claim)
    assert (await store.claim("call-1", "h", lease=30)).state is State.CLAIMED


async def test_an_expired_lease_can_be_claimed_by_someone_else(store: DedupStore) -> None:
    await store.claim("call-1", "h", lease=0.05)

    async def claimed() -> bool:
        return (await store.claim("call-1", "h", lease=30)).state is State.CLAIMED

    await until(claimed, 10, what="the lease to expire")  # BUSY until then, changing nothing


async def test_a_done_mark_expires_after_its_ttl(store: DedupStore) -> None:
    claim = await store.claim("call-1", "h", lease=30)
    await store.done("call-1", "h", claim, ttl=0.05)

    async def claimed() -> bool:
        return (await store.claim("call-1", "h", lease=30)).state is State.CLAIMED

    await until(claimed, 10, what="the done mark to expire")  # DONE until then, no change


async def test_a_stale_owner_cannot_release_a_newer_claim(store: DedupStore) -> None:
    stale = await store.claim("call-1", "h", lease=0.05)

    async def taken_over() -> Any:
        fresh = await store.claim("call-1", "h", lease=30)
        return fresh if fresh.state is State.CLAIMED else None

    fresh = await until(taken_over, 10, what="the stale lease to expire")
    await store.release("call-1", "h", stale)
    assert fresh.state is State.CLAIMED
    assert (await store.claim("call-1", "h", lease=30)).state is State.BUSY


async def test_concurrent_claims_on_redis_yield_exactly_one_winner(
    redis_store: RedisStore,
) -> None:
    claims = await asyncio.gather(*(redis_store.claim("race", "h", lease=30) for _ in range(50)))
    assert sum(c.state is State.CLAIMED for c in claims) == 1


async def test_the_memory_store_forgets_expired_marks_of_callbacks_never_seen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("callback_sink.worker.dedup.SWEEP_EVERY", 10)
    store = MemoryStore()
    for i in range(50):
        claim = await store.claim(f"call-{i}", "h", lease=30)
        await store.done(f"call-{i}", "h", claim, ttl=0.05)
    await asyncio.sleep(0.1)  # the scenario: time passes, the marks expire (nothing to poll)
    for i in range(5):
        claim = await store.claim(f"late-{i}", "h", lease=30)
        await store.done(f"late-{i}", "h", claim, ttl=60)
    assert len(store._marks) <= 10  # SWEEP_EVERY: a sweep ran, only marks since it are left


async def test_claim_all_takes_every_free_handler_in_one_call(store: DedupStore) -> None:
    done = await store.claim("call-1", "a", lease=30)
    await store.done("call-1", "a", done, ttl=60)
    await store.claim("call-1", "b", lease=30)
    found = await store.claim_all(
        ask("call-1", "muc:apply", ["a", "b", "c"], lease=30, runs=20, call_id="call-1")
    )
    assert [c.state for c in found.claims] == [State.DONE, State.BUSY, State.CLAIMED]
    assert found.runs == 1


async def test_a_call_id_stays_bound_to_the_kind_it_first_came_as(store: DedupStore) -> None:
    first = await store.claim_all(
        ask("call-1", "muc:apply", ["a"], lease=30, runs=20, call_id="call-1")
    )
    forged = await store.claim_all(
        ask("call-1|bob", "muc:kick", ["a"], lease=30, runs=20, call_id="call-1")
    )
    assert first.bound_kind == "muc:apply" and first.claims
    assert forged.bound_kind == "muc:apply" and forged.claims == ()


async def test_only_deliveries_that_start_handlers_count_toward_the_budget(
    store: DedupStore,
) -> None:
    taken = await store.claim_all(ask("call-1", "k", ["a"], lease=30, runs=2, call_id="call-1"))
    busy = await store.claim_all(ask("call-1", "k", ["a"], lease=30, runs=2, call_id="call-1"))
    assert (taken.runs, busy.runs) == (1, 1)
    await store.release("call-1", "a", taken.claims[0])
    second = await store.claim_all(ask("call-1", "k", ["a"], lease=30, runs=2, call_id="call-1"))
    await store.release("call-1", "a", second.claims[0])
    third = await store.claim_all(ask("call-1", "k", ["a"], lease=30, runs=2, call_id="call-1"))
    assert second.runs == 2
    assert third.over_budget(2) and third.claims == ()
    assert (await store.claim("call-1", "a", lease=30)).state is State.CLAIMED  # nothing held


async def test_a_replayed_dead_letter_starts_a_fresh_delivery_budget(store: DedupStore) -> None:
    spent = ask("call-1", "k", ["a"], lease=30, runs=1, call_id="call-1")
    first = await store.claim_all(spent)
    await store.release("call-1", "a", first.claims[0])
    assert (await store.claim_all(spent)).over_budget(1)  # dead-lettered: delivery-limit
    replayed = await store.claim_all(replace(spent, epoch="2026-12-06T07:00:00Z"))
    assert replayed.runs == 1 and len(replayed.claims) == 1  # `dlq replay` runs it again


async def test_a_renewed_lease_outlives_its_first_term(store: DedupStore) -> None:
    found = await store.claim_all(ask("call-1", "k", ["a"], lease=0.2, runs=20, call_id="call-1"))
    for _ in range(3):
        await asyncio.sleep(0.1)  # the scenario: half a lease passes before each renewal
        await store.renew([(("call-1", "a"), found.claims[0])], 0.2)
    assert (await store.claim("call-1", "a", lease=30)).state is State.BUSY


async def test_concurrent_claims_and_done_marks_each_get_their_own_answer(
    redis_store: RedisStore,
) -> None:
    keys = [f"call-{i}" for i in range(50)]
    found = await asyncio.gather(
        *(
            redis_store.claim_all(ask(k, "muc:apply", ["a"], lease=30, runs=20, call_id=k))
            for k in keys
        )
    )
    assert all(f.claims[0].state is State.CLAIMED for f in found)
    await asyncio.gather(
        *(redis_store.done(k, "a", f.claims[0], ttl=60) for k, f in zip(keys, found, strict=True))
    )
    kinds = ("muc:apply", "muc:kick")
    again = await asyncio.gather(
        *(
            redis_store.claim_all(ask(k, kinds[i % 2], ["a"], lease=30, runs=20, call_id=k))
            for i, k in enumerate(keys)
        )
    )
    assert [bool(f.claims) for f in again] == [i % 2 == 0 for i in range(50)]
    assert all(f.claims[0].state is State.DONE for f in again if f.claims)


async def test_a_megabyte_recipient_costs_redis_short_keys_only(
    redis_url: str, prefix: str
) -> None:
    event = from_document({"callId": "XXXX#XXXX_1", "timestamp": 1, "security": "s",
                           "chat_type": "chat", "eventType": "chat_offline",
                           "to": "x" * 1_000_000})  # fmt: skip
    store = RedisStore(redis_url, prefix)
    try:
        found = await store.claim_all(ask(event.dedup_key, event.kind, ["h"], 30, 5, event.call_id))
        await store.done(event.dedup_key, "h", found.claims[0], ttl=60)
        keys = [key async for key in store._redis.scan_iter(f"{prefix}:*")]
        assert len(keys) == 3  # the kind binding, the run count, the done mark
        assert max(len(key) for key in keys) <= 200
        assert all([await store._redis.memory_usage(key) < 1000 for key in keys])
    finally:
        await store.purge()
        await store.close()


def test_claim_tokens_are_unique_here_and_in_a_forked_child() -> None:
    """Tokens fence claims: never two alike, even from a child forked mid-count."""
    here = {new_token("w1") for _ in range(10_000)}
    assert len(here) == 10_000 and all(token.startswith("w1.") for token in here)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, then out without pytest's clean-up
        os.write(write, " ".join(new_token("w1") for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(pid, 0)
    ours = {new_token("w1") for _ in range(100)}
    assert len(theirs) == 100 and not theirs & (here | ours)
