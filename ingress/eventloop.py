"""The event loop a process runs on: uvloop where it is installed, else asyncio's own.

uvloop's loop is a drop-in replacement written in Cython over libuv; on the ingress's hot path
(accept, read, write, timers) it takes a good share of the per-request CPU off. ``SINK_LOOP``
picks: ``auto`` (uvloop if importable), ``uvloop`` (required), ``asyncio`` (the pure-Python
path, kept tested).

Before the loop starts, :func:`gc.freeze` moves every object alive then (the modules, classes
and functions imported at start-up: most of a process's objects) out of the collector's
reach: a full collection no longer walks them. In a worker under load full collections came
every few seconds and each paused everything for up to 170 ms, in the tail of every
callback in flight (15 ms at most after; see ``docs/explanation/performance-round2.md``).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from callback_sink.sink.errors import ConfigError

T = TypeVar("T")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(name: str) -> LoopFactory | None:
    """The factory for ``SINK_LOOP=name``; None means asyncio's default loop."""
    if name == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if name == "uvloop":
            raise ConfigError("SINK_LOOP=uvloop but uvloop is not installed") from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``SINK_LOOP`` names."""
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()  # what start-up imported is never scanned again
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main)
