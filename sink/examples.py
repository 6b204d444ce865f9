"""The specification's example callbacks, shipped with the package, and re-signing them.

The examples' own ``security`` values cannot be computed (Easemob's docs use made-up
secrets), so :func:`resign` rewrites them for a given secret. Their timestamps are years
old, and an ingress refuses callbacks older than its maximum age (``SINK_MAX_AGE_S``), so
anything meant to be *sent* is stamped with the current time, as Easemob stamps its own;
the spec's original timestamps stay available for tests that compare exact bodies.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from callback_sink.sink.signature import sign


@dataclass(frozen=True)
class Example:
    source: str  # "muc-callbacks.zh.md#3": file and index of the example in the spec
    body: dict[str, Any]


def now_ms() -> int:
    """The current time as Easemob stamps callbacks: milliseconds since the epoch."""
    return int(time.time() * 1000)


def load_examples(*, now: bool = False) -> list[Example]:
    """Every JSON example of muc-callbacks.zh.md and PROTOCOL.md, in document order: as the
    spec prints them, or (``now=True``) each stamped with the current time."""
    text = (
        resources.files("callback_sink.sink").joinpath("examples.json").read_text(encoding="utf-8")
    )
    examples = [Example(item["source"], item["body"]) for item in json.loads(text)]
    if now:
        stamp = now_ms()
        examples = [Example(e.source, {**e.body, "timestamp": stamp}) for e in examples]
    return examples


def resign(
    body: dict[str, Any], secret: str, *, call_id: str | None = None, now: bool = True
) -> dict[str, Any]:
    """A copy of ``body`` signed with ``secret``, carrying a new callId if given, and
    stamped with the current time unless ``now=False`` keeps the body's own timestamp."""
    signed = dict(body)
    if call_id is not None:
        signed["callId"] = call_id
    if now:
        signed["timestamp"] = now_ms()
    signed["security"] = sign(signed["callId"], secret, signed["timestamp"])
    return signed
