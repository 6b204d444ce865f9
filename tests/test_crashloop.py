"""Crash-loop detection and the takeover of dead workers' claims: the pure decisions first,
then the same semantics through both dedup stores (worker/crashloop.py)."""

from __future__ import annotations

from callback_sink.sink import headers
from callback_sink.worker import crashloop
from callback_sink.worker.crashloop import Reckoning, Record, reckon, takeover, worker_of
from callback_sink.worker.dedup import Claim, ClaimRequest, DedupStore, State


def test_a_token_names_the_worker_that_holds_it() -> None:
    assert worker_of("w1.abc") == "w1"
    assert worker_of("0123abcd") == ""  # a token of a worker without liveness: nobody's


def test_a_lone_run_with_no_mark_before_it_counts_no_death() -> None:
    record, answer = reckon(Record(), "w2.x", epoch="")
    assert answer == Reckoning(0)
    assert record == Record("w2.x", 0, "")


def test_a_mark_left_behind_is_judged_first_and_changes_nothing() -> None:
    before = Record("w1.x", 1, "")
    record, answer = reckon(before, "w2.y", epoch="")
    assert answer == Reckoning(1, judge="w1.x")
    assert record == before


def test_a_mark_whose_worker_died_counts_one_death_and_becomes_the_new_runs_mark() -> None:
    record, answer = reckon(Record("w1.x", 1, ""), "w2.y", "", judged="w1.x", dead=True)
    assert answer == Reckoning(2)
    assert record == Record("w2.y", 2, "")


def test_a_mark_whose_worker_lives_counts_no_death() -> None:
    record, answer = reckon(Record("w1.x", 1, ""), "w2.y", "", judged="w1.x", dead=False)
    assert answer == Reckoning(1)
    assert record.alone == "w2.y"


def test_a_judgement_of_a_mark_that_changed_meanwhile_judges_the_new_one() -> None:
    _, answer = reckon(Record("w3.z", 1, ""), "w2.y", "", judged="w1.x", dead=True)
    assert answer == Reckoning(1, judge="w3.z")


def test_a_replay_starts_the_count_afresh() -> None:
    record, answer = reckon(Record("w1.x", 2, ""), "w2.y", epoch="2026-12-06T06:00:00.000+00:00")
    assert answer == Reckoning(0)
    assert record == Record("w2.y", 0, "2026-12-06T06:00:00.000+00:00")


def test_only_the_run_that_left_the_mark_takes_it_away() -> None:
    assert crashloop.ended(Record("w1.x", 1), "w1.x") == Record("", 1)
    assert crashloop.ended(Record("w2.y", 1), "w1.x") == Record("w2.y", 1)


def test_the_crash_loop_verdict_comes_at_the_limit_and_never_when_off() -> None:
    assert not crashloop.crash_loop(1, 2)
    assert crashloop.crash_loop(2, 2)
    assert not crashloop.crash_loop(5, 0)


def test_the_epoch_is_the_replay_stamp() -> None:
    assert crashloop.epoch_of({headers.REPLAYED: b"2026-12-06T06:00"}) == "2026-12-06T06:00"
    assert crashloop.epoch_of(None) == ""


def busy(holder: str) -> Claim:
    return Claim(State.BUSY, holder=holder)


def test_claims_of_a_worker_whose_key_is_gone_are_taken_and_live_ones_waited_for() -> None:
    claims = [busy("dead.1"), busy("live.2"), Claim(State.DONE), busy("me.3"), busy("anon")]
    plan = takeover(["a", "b", "c", "d", "e"], claims, {"dead": 0.0, "live": 1.2}, owner="me")
    assert plan.handlers == ("a",)
    assert plan.dead == frozenset({"dead.1"})
    assert plan.retry_after == 1.2


def test_with_no_live_holder_there_is_no_hint() -> None:
    assert takeover(["a"], [busy("dead.1")], {"dead": 0.0}, "me").retry_after is None


# The same semantics through both stores.


def ask(handlers: list[str], owner: str, **extra: object) -> ClaimRequest:
    return ClaimRequest(
        "k", "call-1", "muc:kick", handlers, lease=30, bind_ttl=60, max_runs=20, owner=owner,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_busy_claim_names_its_holder_and_a_dead_holder_is_taken_over_fenced(
    store: DedupStore,
) -> None:
    await store.alive("w1", 30)
    first = await crashloop.claim(store, ask(["a"], "w1"))
    token = first.claims[0].token
    assert worker_of(token) == "w1"
    held = await crashloop.claim(store, ask(["a"], "w2"))
    assert held.claims[0] == Claim(State.BUSY, holder=token)
    assert held.retry_after is not None and 0 < held.retry_after <= 30
    await store.gone("w1")  # w1 died: its key is gone
    taken = await crashloop.claim(store, ask(["a"], "w2"))
    assert taken.claims[0].state is State.CLAIMED
    assert taken.runs == 2  # the takeover is a run of its own: SINK_MAX_DELIVERIES counts it
    assert not await store.done("k", "a", first.claims[0], ttl=60)  # w1's late mark: refused


async def test_a_takeover_beside_a_free_claim_counts_the_delivery_once(store: DedupStore) -> None:
    await store.alive("w1", 30)
    first = await crashloop.claim(store, ask(["a", "b"], "w1"))
    await store.release("k", "a", first.claims[0])  # a failed and was given back; b runs
    await store.gone("w1")
    found = await crashloop.claim(store, ask(["a", "b"], "w2"))
    assert [c.state for c in found.claims] == [State.CLAIMED, State.CLAIMED]
    assert found.runs == 2


async def test_two_lone_runs_that_died_make_a_crash_loop_and_one_that_ended_makes_none(
    store: DedupStore,
) -> None:
    deaths = []
    for n in range(3):  # each lone run dies holding its claim: its worker's key is gone
        worker = f"w{n}"
        await store.alive(worker, 30)
        found = await crashloop.claim(store, ask(["a"], worker), alone=True)
        assert found.claims[0].state is State.CLAIMED, n
        deaths.append(found.deaths)
        await store.gone(worker)
    assert deaths == [0, 1, 2]
    await store.alive("w9", 30)
    found = await crashloop.claim(store, ask(["a"], "w9"), alone=True, epoch="replayed")
    assert found.deaths == 0  # a replay counts afresh
    await store.release("k", "a", found.claims[0])
    await store.alone_ended(ask(["a"], "w9"), found.mark)  # it failed, and said so: no death
    await store.gone("w9")
    again = await crashloop.claim(store, ask(["a"], "w10"), alone=True, epoch="replayed")
    assert again.deaths == 0


async def test_a_lone_run_that_lost_its_claim_while_alive_is_no_death(store: DedupStore) -> None:
    await store.alive("w1", 30)
    first = await crashloop.claim(store, ask(["a"], "w1"), alone=True)
    await store.release("k", "a", first.claims[0])  # as if its lease lapsed (a stalled loop)
    found = await crashloop.claim(store, ask(["a"], "w2"), alone=True)
    assert found.claims[0].state is State.CLAIMED
    assert found.deaths == 0
