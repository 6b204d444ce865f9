"""The pre-send chain, its budget and its default, the decorator and the testing kit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from callback_sink.handlers import Event, Verdict, presend
from callback_sink.handlers.presend import load_presend
from callback_sink.sink.errors import HandlerLoadError
from callback_sink.sink.presend import ANSWER_LIMIT, Decision, decide
from callback_sink.testing import make_event, make_presend_event, run_presend
from tests import presend_fixtures
from tests.presend_fixtures import BANNED, broken, sleepy

FIXTURES = "tests.presend_fixtures"


async def test_the_chain_is_loaded_in_definition_order() -> None:
    chain = load_presend([FIXTURES], use_entry_points=False)
    assert [f.__name__ for f in chain] == ["block_banned_word", "shout", "no_capitals"]


async def test_a_message_with_the_banned_word_is_rejected_with_its_code() -> None:
    decision = await run_presend(make_presend_event(f"hello {BANNED}"), FIXTURES)
    assert (decision.valid, decision.code, decision.source) == (False, "banned-word", "chain")
    assert decision.rejected_by == f"{FIXTURES}.block_banned_word"
    assert decision.verdict.answer() == {"valid": False, "code": "banned-word"}


async def test_a_clean_message_passes_without_a_payload_in_the_answer() -> None:
    decision = await run_presend(make_presend_event("hello"), FIXTURES)
    assert decision.valid and decision.source == "chain"
    assert decision.answer_body() == b'{"valid":true}'


async def test_a_replaced_payload_is_what_the_next_function_sees_and_what_is_answered() -> None:
    decision = await run_presend(make_presend_event("!shout hi there"), FIXTURES)
    assert decision.valid and decision.payload == {"msg": "HI THERE", "type": "txt"}
    assert decision.replaced_by == (f"{FIXTURES}.shout",)
    loud = await run_presend(make_presend_event("!shout no-caps please"), FIXTURES)
    assert (loud.valid, loud.code, loud.payload) == (False, "too-loud", None)


async def test_the_first_rejection_wins_and_later_functions_do_not_run() -> None:
    ran: list[str] = []

    async def first(event: Event) -> Verdict:
        ran.append("first")
        return Verdict.reject(code="first")

    async def second(event: Event) -> Verdict:
        ran.append("second")
        return Verdict.reject(code="second")

    decision = await run_presend(make_presend_event(), first, second)
    assert decision.code == "first" and ran == ["first"]


@pytest.mark.parametrize("default", ["accept", "reject"])
async def test_a_chain_past_its_budget_gets_the_default_verdict_in_time(default: str) -> None:
    started = time.perf_counter()
    decision = await run_presend(make_presend_event(), sleepy, budget_ms=100, default=default)
    elapsed = time.perf_counter() - started
    assert (decision.source, decision.reason) == ("default", "timeout")
    assert decision.valid is (default == "accept")
    # 10x the budget, generous on a shared machine, and still far below the chain's 5 s sleep
    # (bench/presend.py measures the tight figure).
    assert elapsed < 10 * 0.1


async def test_a_chain_that_swallows_its_cancellation_still_cannot_hold_the_answer() -> None:
    async def stubborn(event: Event) -> Verdict:
        for _ in range(20):
            try:
                await __import__("asyncio").sleep(0.1)  # the scenario: a chain that stalls
            except BaseException:
                continue
        return Verdict.reject()

    started = time.perf_counter()
    decision = await run_presend(make_presend_event(), stubborn, budget_ms=50)
    assert decision.reason == "timeout" and time.perf_counter() - started < 0.5


async def test_an_exception_or_a_bad_value_gets_the_default_verdict() -> None:
    error = await run_presend(make_presend_event(), broken, default="reject")
    assert (error.valid, error.reason) == (False, "error")
    assert error.error is not None and "moderation service down" in error.error

    async def wrong(event: Event) -> Any:
        return True

    bad = await run_presend(make_presend_event(), wrong)
    assert (bad.valid, bad.reason) == (True, "bad-verdict")


async def test_an_answer_easemob_would_refuse_as_too_long_gets_the_default() -> None:
    async def verbose(event: Event) -> Verdict:
        return Verdict.accept(payload={"msg": "x" * ANSWER_LIMIT, "type": "txt"})

    decision = await decide([verbose], make_presend_event(), 1.0, Verdict.reject("fallback"))
    assert (decision.reason, decision.valid, decision.code) == (
        "answer-too-long",
        False,
        "fallback",
    )


async def test_an_empty_chain_passes_every_message() -> None:
    decision = await run_presend(make_presend_event(f"{BANNED}"), presend_fixtures.sleepy)
    assert decision.reason == "timeout"  # sanity: the kit takes bare functions
    assert (await decide([], make_presend_event(), 0.1, Verdict.reject())).valid


def test_presend_accepts_only_an_async_def_used_bare() -> None:
    def not_async(event: Event) -> None:
        return None

    with pytest.raises(HandlerLoadError, match="async def"):
        presend(not_async)  # type: ignore[type-var]
    with pytest.raises(HandlerLoadError, match="used bare"):
        presend("message")  # type: ignore[type-var]


def test_verdict_constructors_check_their_arguments() -> None:
    assert Verdict.accept() == Verdict(True)
    assert Verdict.reject("c").answer() == {"valid": False, "code": "c"}
    with pytest.raises(TypeError):
        Verdict.accept(payload="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Verdict.reject(code=42)  # type: ignore[arg-type]


def test_a_verdict_record_decodes_as_presend_verdict_with_the_message_fields() -> None:
    event = make_event("presend:verdict", to="bob", payload={"msg": "hi"})
    assert (event.name, event.family, event.to) == ("presend:verdict", "presend", "bob")
    assert event.payload["msg"] == "hi" and event.raw["presend_verdict"]["valid"] is True


#: The keys of a ``presend:verdict`` record, as the README documents them.
RECORD_KEYS = {"valid", "code", "payload", "source", "reason", "error", "rejected_by",
               "replaced_by", "duration_ms"}  # fmt: skip


@pytest.mark.parametrize(
    "decision",
    [
        Decision(Verdict.accept(), "chain"),
        Decision(Verdict.accept(payload={"msg": "hi"}), "chain", replaced_by=("m.f",)),
        Decision(Verdict.reject("banned"), "chain", rejected_by="m.f"),
        Decision(Verdict.reject(), "default", "timeout"),
    ],
    ids=["accepted", "replaced", "rejected", "default"],
)
def test_a_verdict_record_always_has_every_documented_key(decision: Decision) -> None:
    record = decision.record()
    assert set(record) == RECORD_KEYS
    assert (record["valid"], record["code"], record["payload"]) == (
        decision.valid, decision.code, decision.payload,
    )  # fmt: skip


def test_an_accepted_record_reads_code_and_payload_as_none() -> None:
    verdict = make_event("presend:verdict").raw["presend_verdict"]
    assert verdict["valid"] is True and verdict["code"] is None and verdict["payload"] is None
