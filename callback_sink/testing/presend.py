"""Test ``@presend`` moderation functions the way the ingress runs them, without a server.

::

    from callback_sink.testing import make_presend_event, run_presend

    async def test_a_banned_word_is_blocked() -> None:
        decision = await run_presend(make_presend_event(msg="buy cheap pills"), "myapp.moderation")
        assert not decision.valid and decision.code == "banned-word"

:func:`run_presend` loads the chain with the real loader and runs it through the real
:func:`~sink.presend.decide`: the budget, the default verdict on a time-out or an error,
the first rejection winning, a replaced payload handed on. The :class:`~sink.presend.Decision`
says what Easemob would be answered (``valid``, ``code``, ``payload``, ``answer_body()``) and
why (``source``, ``reason``, ``rejected_by``, ``replaced_by``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import orjson

from callback_sink.handlers.presend import load_presend
from callback_sink.sink.events import Event, from_document, parse
from callback_sink.sink.examples import now_ms
from callback_sink.sink.presend import Decision, PresendFunc, Verdict, decide, example_document
from callback_sink.sink.settings import Settings
from callback_sink.sink.signature import sign

__all__ = ["make_presend_body", "make_presend_event", "run_presend"]

#: Keyword arguments whose document field is not a valid Python name.
_FIELDS = {"from_": "from", "call_id": "callId"}
PresendSource = str | ModuleType | PresendFunc


async def run_presend(
    event: Event,
    *sources: PresendSource,
    budget_ms: float | None = None,
    default: str | None = None,
    settings: Settings | None = None,
) -> Decision:
    """The answer the ingress would give to ``event``.

    ``sources``: handler modules (dotted paths or modules) or ``@presend`` functions, in
    chain order; with none, the installed entry points. ``budget_ms`` and ``default``
    (``accept`` / ``reject``) default to ``SINK_PRESEND_BUDGET_MS`` / ``SINK_PRESEND_DEFAULT``
    of ``settings`` (or their defaults).
    """
    settings = settings or Settings()
    chain = _chain(sources)
    budget = (budget_ms if budget_ms is not None else settings.presend_budget_ms) / 1000
    policy = default or settings.presend_default
    if policy not in ("accept", "reject"):
        raise ValueError(f"default={policy!r}: must be accept or reject")
    fallback = Verdict.accept() if policy == "accept" else Verdict.reject()
    return await decide(chain, event, budget, fallback)


def make_presend_event(msg: str = "hello", **overrides: Any) -> Event:
    """A pre-send callback of a text message ``msg``, shaped like Easemob's documented
    example, with a fresh callId and the current time. ``overrides`` replace fields
    (``from_=``, ``to=``, ``chat_type=``, ``group_id=``, ``payload=`` replaces the payload)."""
    return from_document(_document(msg, overrides))


def make_presend_body(msg: str = "hello", *, secret: str, **overrides: Any) -> bytes:
    """Like :func:`make_presend_event`, as the signed JSON body Easemob would POST."""
    doc = _document(msg, overrides)
    doc["security"] = sign(doc["callId"], secret, doc["timestamp"])
    body = orjson.dumps(doc)
    parse(body)
    return body


def _document(msg: str, overrides: dict[str, Any]) -> dict[str, Any]:
    doc = example_document()
    doc["callId"] = f"XXXX#XXXX_{uuid.uuid4()}"
    doc["timestamp"] = now_ms()
    doc["msg_id"] = str(uuid.uuid4().int % 10**18)
    doc["payload"] = {"msg": msg, "type": "txt"}
    for key, value in overrides.items():
        doc[_FIELDS.get(key, key)] = value
    return doc


def _chain(sources: Sequence[PresendSource]) -> tuple[PresendFunc, ...]:
    modules = [s for s in sources if isinstance(s, str | ModuleType)]
    if not sources:
        return load_presend([], use_entry_points=True)
    chain: list[PresendFunc] = []
    loaded = iter(load_presend(modules, use_entry_points=False)) if modules else iter(())
    by_module: dict[str, list[PresendFunc]] = {}
    for func in loaded:
        by_module.setdefault(func.__module__, []).append(func)
    for source in sources:
        if isinstance(source, str | ModuleType):
            name = source if isinstance(source, str) else source.__name__
            chain.extend(by_module.pop(name, []))
        else:
            chain.append(source)
    return tuple(chain)
