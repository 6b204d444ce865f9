"""``@presend`` functions for the pre-send tests (a module, as handler modules are)."""

from __future__ import annotations

import asyncio

from callback_sink.handlers import Event, Verdict, presend

BANNED = "forbidden-word"


@presend
async def block_banned_word(event: Event) -> Verdict | None:
    """Rejects any message whose text contains the banned word."""
    if BANNED in str(event.payload.get("msg", "")):
        return Verdict.reject(code="banned-word")
    return None


@presend
async def shout(event: Event) -> Verdict | None:
    """Rewrites ``!shout`` messages in capitals (the next function sees the new text)."""
    text = str(event.payload.get("msg", ""))
    if text.startswith("!shout "):
        return Verdict.accept(payload={**event.payload, "msg": text[7:].upper()})
    return None


@presend
async def no_capitals(event: Event) -> Verdict | None:
    """Rejects messages that are all capitals: it sees what ``shout`` made of them."""
    text = str(event.payload.get("msg", ""))
    if text.isupper() and "NO-CAPS" in text:
        return Verdict.reject(code="too-loud")
    return Verdict.accept()


async def sleepy(event: Event) -> Verdict | None:
    """Sleeps far past any budget (not marked: tests put it in a chain by hand)."""
    await asyncio.sleep(5)  # the scenario: a chain far past any budget
    return Verdict.reject(code="too-late")


async def broken(event: Event) -> Verdict | None:
    raise RuntimeError("moderation service down")
