"""The benchmark's handler: does no work, and tells the benchmark how many callbacks it saw.

Loaded by the worker under test with ``SINK_HANDLERS=bench.counting_handler`` (the repository
root on ``PYTHONPATH``). For every callback it writes one line ``bench-handled N T ID`` to
standard error: ``T`` is ``time.monotonic()``, a system-wide clock on Linux, so the
benchmark can time the N-th callback exactly instead of when it happened to read the line;
``ID`` is the callback's dedup key, so the benchmark can tell a duplicate from a loss.
A write to a pipe costs a few microseconds, far below what the worker spends per callback.
"""

from __future__ import annotations

import itertools
import sys
import time

from handlers import Event, on

#: Prefix of the progress lines; the benchmark parses them (see ``procs.HANDLED``).
MARK = "bench-handled"

_handled = itertools.count(1)


@on("*")
async def count(event: Event) -> None:
    """Count the callback; every event name reaches this handler."""
    sys.stderr.write(f"{MARK} {next(_handled)} {time.monotonic():.6f} {event.dedup_key}\n")
