"""decide() is a pure function of what the handlers did and of the delivery's counters."""

from __future__ import annotations

import pytest

from callback_sink.handlers.registry import Handler, Options
from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.events import Event, from_document
from callback_sink.sink.outcomes import Outcome
from callback_sink.worker.decide import Delivery, Policy, decide
from callback_sink.worker.pipeline import DeliveryResult, HandlerResult, Result
from tests.conftest import callback, signed

POLICY = Policy(max_attempts=3, retry_delays=(1.0, 10.0))


async def _noop(event: Event) -> None:
    return None


def handler(name: str, **options: object) -> Handler:
    return Handler(name, _noop, ("*",), Options(**options))  # type: ignore[arg-type]


def ran(*results: HandlerResult, settled: frozenset[str] = frozenset()) -> DeliveryResult:
    import orjson

    event = from_document(orjson.loads(signed(callback())))
    return DeliveryResult(event, settled, list(results))


def failed(h: Handler, error: BaseException | None = None) -> HandlerResult:
    return HandlerResult(h, Result.FAILED, error=error or ValueError("no"))


def test_a_delivery_where_every_handler_succeeded_is_just_acked() -> None:
    decision = decide(ran(HandlerResult(handler("a"), Result.OK)), Delivery(), POLICY)
    assert decision.done


def test_a_failure_is_retried_on_the_tier_of_its_attempt_with_the_next_attempt_number() -> None:
    a, b = handler("a"), handler("b")
    decision = decide(ran(HandlerResult(a, Result.OK), failed(b)), Delivery(2, 2), POLICY)
    assert decision.dead_letter is None
    assert decision.republish is not None
    assert (decision.republish.kind, decision.republish.delay) == ("retry", 10.0)
    assert decision.republish.attempt == 3
    assert decision.republish.handlers == ("b",)


def test_the_last_attempt_dead_letters_the_failing_handler() -> None:
    decision = decide(ran(failed(handler("b"))), Delivery(3, 3), POLICY)
    assert decision.republish is None
    assert decision.dead_letter is not None
    assert decision.dead_letter.reason == "attempts-exhausted"
    assert decision.dead_letter.handlers == ("b",)


def test_a_handler_with_fewer_retries_gives_up_alone_while_the_other_is_retried() -> None:
    quick, patient = handler("quick", retries=2), handler("patient")
    decision = decide(ran(failed(quick), failed(patient)), Delivery(2, 2), POLICY)
    assert decision.dead_letter is not None and decision.dead_letter.handlers == ("quick",)
    assert decision.republish is not None and decision.republish.handlers == ("patient",)


def test_more_retries_on_a_handler_keep_it_alive_past_the_worker_wide_limit() -> None:
    decision = decide(ran(failed(handler("b", retries=6))), Delivery(3, 3), POLICY)
    assert decision.dead_letter is None
    assert decision.republish is not None and decision.republish.attempt == 4


@pytest.mark.parametrize(
    ("h", "error"),
    [(handler("b"), PermanentError("bad id")), (handler("b", give_up_on=(KeyError,)), KeyError())],
)
def test_a_permanent_error_or_a_give_up_type_dead_letters_at_once(
    h: Handler, error: BaseException
) -> None:
    decision = decide(ran(failed(h, error)), Delivery(1, 1), POLICY)
    assert decision.dead_letter is not None and decision.dead_letter.reason == "permanent"


def test_a_retry_delay_asked_by_the_handler_is_rounded_up_to_a_ladder_step() -> None:
    decision = decide(ran(failed(handler("b"), Retry(delay=3))), Delivery(), POLICY)
    assert decision.republish is not None and decision.republish.delay == 5


def test_a_busy_handler_is_deferred_without_costing_an_attempt_and_backs_off() -> None:
    busy = ran(HandlerResult(handler("b"), Result.BUSY))
    first = decide(busy, Delivery(1, 1), POLICY).republish
    later = decide(busy, Delivery(1, 5), POLICY).republish
    assert first is not None and later is not None
    assert (first.kind, first.attempt) == ("deferred", 1)
    assert later.delay > first.delay


def test_a_callback_past_its_delivery_budget_is_dead_lettered_with_the_reason() -> None:
    spent = ran()
    spent.over_budget = True
    decision = decide(spent, Delivery(attempt=1, deliveries=21), POLICY)
    assert decision.republish is None
    assert decision.dead_letter is not None and decision.dead_letter.reason == "delivery-limit"


def test_a_callback_whose_lone_runs_killed_their_workers_is_dead_lettered_as_a_crash_loop() -> (
    None
):  # fmt: skip
    looped = ran()
    looped.crash_deaths, looped.pending = 2, ("a", "b")
    decision = decide(looped, Delivery(attempt=1, deliveries=4), POLICY)
    assert decision.republish is None
    assert decision.dead_letter is not None
    assert (decision.dead_letter.reason, decision.dead_letter.handlers) == (
        "crash-loop",
        ("a", "b"),
    )


def test_a_deferral_behind_a_live_holder_waits_no_longer_than_its_liveness_key() -> None:
    busy = ran(HandlerResult(handler("a"), Result.BUSY))
    busy.retry_after = 1.7
    plan = decide(busy, Delivery(1, 15), POLICY).republish  # the backoff has grown to 30 s
    assert plan is not None and plan.delay == 2  # the key's 1.7 s, on the delay ladder
    busy.retry_after = None
    grown = decide(busy, Delivery(1, 15), POLICY).republish
    assert grown is not None and grown.delay == 30


def test_a_deferred_copy_of_a_lone_delivery_stays_a_suspect() -> None:
    busy = ran(HandlerResult(handler("a"), Result.BUSY))
    assert not decide(busy, Delivery(), POLICY).republish.suspect  # type: ignore[union-attr]
    busy.alone = True
    assert decide(busy, Delivery(), POLICY).republish.suspect  # type: ignore[union-attr]


def test_a_forged_callback_is_neither_retried_nor_dead_lettered() -> None:
    forged = ran()
    forged.forged_as = "muc:apply"
    decision = decide(forged, Delivery(), POLICY)
    assert decision.done and decision.forged_as == "muc:apply"


def test_each_handler_of_a_delivery_is_named_with_the_one_outcome_vocabulary() -> None:
    quick, patient = handler("quick", retries=2), handler("patient")
    done, busy = handler("done"), handler("busy")
    results = (failed(quick), failed(patient), HandlerResult(done, Result.OK),
               HandlerResult(busy, Result.BUSY))  # fmt: skip
    decision = decide(ran(*results), Delivery(2, 2), POLICY)
    assert [decision.outcome_of(r) for r in results] == [
        Outcome.DEAD_LETTER, Outcome.RETRY, Outcome.OK, Outcome.DEFERRED
    ]  # fmt: skip
    assert [str(o) for o in Outcome] == [
        "ok", "duplicate", "retry", "dead_letter", "deferred", "forged"
    ]  # fmt: skip


def test_a_crash_loop_dead_letters_the_handlers_it_kept_from_running() -> None:
    spent = ran()
    spent.over_budget, spent.pending = True, ("a", "b")
    decision = decide(spent, Delivery(attempt=1, deliveries=21), POLICY)
    assert decision.dead_letter is not None and decision.dead_letter.handlers == ("a", "b")
