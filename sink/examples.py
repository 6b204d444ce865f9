"""The specification's example callbacks, shipped with the package, and re-signing them.

The examples' own ``security`` values cannot be computed (Easemob's docs use made-up
secrets), so :func:`resign` rewrites them for a given secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from sink.signature import sign


@dataclass(frozen=True)
class Example:
    source: str  # "muc-callbacks.zh.md#3": file and index of the example in the spec
    body: dict[str, Any]


def load_examples() -> list[Example]:
    """Every JSON example of muc-callbacks.zh.md and PROTOCOL.md, in document order."""
    text = resources.files("sink").joinpath("examples.json").read_text(encoding="utf-8")
    return [Example(item["source"], item["body"]) for item in json.loads(text)]


def resign(body: dict[str, Any], secret: str, *, call_id: str | None = None) -> dict[str, Any]:
    """A copy of ``body`` signed with ``secret`` (and, if given, carrying a new callId)."""
    signed = dict(body)
    if call_id is not None:
        signed["callId"] = call_id
    signed["security"] = sign(signed["callId"], secret, signed["timestamp"])
    return signed
