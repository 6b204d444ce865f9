"""Pre-send moderation: verdicts, the chain of ``@presend`` functions, and its time budget.

Before delivering a message a client sent, Easemob POSTs it to the pre-send URL and waits
(200 ms by default) for ``{"valid": true|false, "code": "...", "payload": {...}}``: pass,
block, or pass a rewritten payload. A ``@presend`` function (see :mod:`handlers.presend`)
returns ``None`` or ``Verdict.accept()`` to pass, ``Verdict.reject(code=...)`` to block,
``Verdict.accept(payload={...})`` to pass a replaced payload. The functions run in order;
the first rejection wins; a replaced payload is what the next one sees.

:func:`decide` runs a chain within a budget and never fails: on a time-out, an exception,
a value that is not a :class:`Verdict` or an answer Easemob would refuse (over 1,000
characters), the configured default verdict is the answer, and the :class:`Decision` says
why. The ingress answers with it, the testing kit reports it.

The record of a decision (what the worker sees as ``presend:verdict``) is the pre-send
document itself plus one key, :data:`~sink.events.PRESEND_RECORD_KEY`, holding the verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from callback_sink.sink.events import PRESEND_RECORD_KEY, Event

__all__ = [
    "ANSWER_LIMIT",
    "PRESEND_RECORD_KEY",
    "BadVerdict",
    "Decision",
    "PresendFunc",
    "Verdict",
    "decide",
    "example_document",
    "record_document",
    "run_chain",
]  # fmt: skip

#: Easemob treats a pre-send answer over 1,000 characters as an attack: the call fails.
ANSWER_LIMIT = 1000
#: What a ``@presend`` function is: ``async def f(event) -> Verdict | None``.
PresendFunc = Callable[[Event], Awaitable["Verdict | None"]]
Source = Literal["chain", "default"]

#: Chains that overran their budget and were cancelled but have not finished yet: kept
#: referenced so that they are not garbage-collected while they unwind.
_abandoned: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a ``@presend`` function decides about one message (and what Easemob is told).

    Build one with :meth:`accept` or :meth:`reject`.
    """

    valid: bool
    #: Shown to the sender's client when the message is blocked (``None``: Easemob's
    #: "custom logic denied").
    code: str | None = None
    #: The message's new payload, when it passes rewritten; ``None`` keeps the original.
    payload: dict[str, Any] | None = None

    @classmethod
    def accept(cls, payload: dict[str, Any] | None = None) -> Verdict:
        """Let the message through, with ``payload`` replacing its payload if given."""
        if payload is not None and not isinstance(payload, dict):
            raise TypeError("Verdict.accept(payload=...) must be a dict")
        return cls(True, None, payload)

    @classmethod
    def reject(cls, code: str | None = None) -> Verdict:
        """Block the message; ``code`` is the error its sender's client shows."""
        if code is not None and not isinstance(code, str):
            raise TypeError("Verdict.reject(code=...) must be a string")
        return cls(False, code, None)

    def answer(self) -> dict[str, Any]:
        """The JSON object Easemob expects: ``valid``, and ``code`` / ``payload`` when set
        (Easemob asks for no ``payload`` at all when the message is not modified)."""
        doc: dict[str, Any] = {"valid": self.valid}
        if self.code is not None:
            doc["code"] = self.code
        if self.payload is not None:
            doc["payload"] = self.payload
        return doc


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one pre-send callback, and how it came about."""

    verdict: Verdict
    #: ``chain``: the functions decided; ``default``: ``SINK_PRESEND_DEFAULT`` was answered.
    source: Source
    #: Why the default was answered: ``timeout``, ``error``, ``bad-verdict``,
    #: ``answer-too-long`` (``None`` when the chain decided).
    reason: str | None = None
    #: The exception (``error``) or the value (``bad-verdict``), as text.
    error: str | None = None
    #: The function whose rejection won, as ``module.function``.
    rejected_by: str | None = None
    #: The functions that replaced the payload, in order.
    replaced_by: tuple[str, ...] = ()
    duration_ms: float = 0.0

    @property
    def valid(self) -> bool:
        return self.verdict.valid

    @property
    def code(self) -> str | None:
        return self.verdict.code

    @property
    def payload(self) -> dict[str, Any] | None:
        return self.verdict.payload

    def answer_body(self) -> bytes:
        return orjson.dumps(self.verdict.answer())

    def record(self) -> dict[str, Any]:
        """The verdict as the ``presend:verdict`` event carries it: every key always present
        (``code`` and ``payload`` are ``None`` when the answer had none), so that a handler
        can read ``record["code"]`` of an accepted message as well as of a blocked one."""
        return {
            "valid": self.verdict.valid,
            "code": self.verdict.code,
            "payload": self.verdict.payload,
            "source": self.source,
            "reason": self.reason,
            "error": self.error,
            "rejected_by": self.rejected_by,
            "replaced_by": list(self.replaced_by),
            "duration_ms": round(self.duration_ms, 3),
        }


class BadVerdict(TypeError):
    """A ``@presend`` function returned something that is not a :class:`Verdict` or None."""


def name_of(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


async def run_chain(chain: Sequence[PresendFunc], event: Event) -> tuple[Verdict, Decision]:
    """Run ``chain`` in order on ``event``, without a budget; the first rejection wins, a
    replaced payload is what the next function sees. Raises what a function raises, and
    :class:`BadVerdict` for a value that is not a :class:`Verdict` or ``None``."""
    payload: dict[str, Any] | None = None
    replaced: list[str] = []
    for func in chain:
        result = await func(event)
        if result is None:
            continue
        if not isinstance(result, Verdict):
            raise BadVerdict(f"{name_of(func)} returned {result!r}, not a Verdict or None")
        if not result.valid:
            verdict = Verdict.reject(result.code)
            return verdict, Decision(verdict, "chain", rejected_by=name_of(func))
        if result.payload is not None:
            payload = result.payload
            replaced.append(name_of(func))
            event = replace(event, raw={**event.raw, "payload": payload})
    verdict = Verdict.accept(payload)
    return verdict, Decision(verdict, "chain", replaced_by=tuple(replaced))


async def decide(
    chain: Sequence[PresendFunc], event: Event, budget_s: float, default: Verdict
) -> Decision:
    """The answer to ``event`` within ``budget_s`` seconds, whatever the chain does.

    The chain runs as a task of its own: one that overruns is cancelled and left to unwind
    on its own time (a function that swallows the cancellation cannot hold the answer).
    """
    started = time.perf_counter()
    if not chain:
        return _timed(Decision(Verdict.accept(), "chain"), started)
    task = asyncio.ensure_future(run_chain(chain, event))
    if budget_s > 0:
        done, _ = await asyncio.wait({task}, timeout=budget_s)
    else:
        done = set()
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        return _timed(Decision(default, "default", "timeout"), started)
    exc = task.exception()
    if isinstance(exc, BadVerdict):
        return _timed(Decision(default, "default", "bad-verdict", str(exc)), started)
    if exc is not None:
        error = f"{type(exc).__name__}: {exc}"
        return _timed(Decision(default, "default", "error", error), started)
    _, decision = task.result()
    if len(decision.answer_body().decode()) > ANSWER_LIMIT:
        error = f"answer of {len(decision.answer_body())} bytes, Easemob takes {ANSWER_LIMIT}"
        return _timed(Decision(default, "default", "answer-too-long", error), started)
    return _timed(decision, started)


def _timed(decision: Decision, started: float) -> Decision:
    return replace(decision, duration_ms=(time.perf_counter() - started) * 1000)


def _forget(task: asyncio.Task[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: an overrun chain's late failure is not an error


def record_document(callback: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The ``presend:verdict`` document: the pre-send callback, untouched, plus the verdict
    under :data:`PRESEND_RECORD_KEY` (its callId, timestamp and security stay the callback's
    own, so the record is deduplicated by the pre-send callId)."""
    return {**callback, PRESEND_RECORD_KEY: decision.record()}


def example_document() -> dict[str, Any]:
    """Easemob's documented pre-send request for a text message (unsigned, its own stamps)."""
    return {
        "callId": "XXXX-XXXX#test_0990a64f-XXXX-XXXX-8696-cf3b48b20e7e",
        "timestamp": 1600060847294,
        "chat_type": "groupchat",
        "group_id": "16934809238921545",
        "from": "user1",
        "to": "user2",
        "msg_id": "8924312242322",
        "payload": {"msg": "welcome to easemob!", "type": "txt"},
        "security": "2ca02c394bef9e7abc83958bcc3156d3",
    }
