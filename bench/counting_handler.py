"""The benchmark's handler: does no work, and tells the benchmark what it saw and when.

Loaded by the worker under test with ``SINK_HANDLERS=bench.counting_handler`` (the repository
root on ``PYTHONPATH``). For every callback it writes one line
``bench-handled N T CALL_ID DEDUP_KEY`` to standard error (a file: see ``procs.start``):
``T`` is ``time.monotonic()``, a system-wide clock on Linux, so the benchmark times the N-th
callback exactly and matches it to the moment its POST was due (end-to-end latency);
the callId and dedup key tell a duplicate from a loss. A line costs a few microseconds, far
below what the worker spends per callback.
"""

from __future__ import annotations

import itertools
import sys
import time

from callback_sink.handlers import Event, on

#: Prefix of the progress lines; the benchmark parses them (see ``procs.HANDLED``).
MARK = "bench-handled"

_handled = itertools.count(1)


@on("*")
async def count(event: Event) -> None:
    """Count the callback; every event name reaches this handler."""
    sys.stderr.write(
        f"{MARK} {next(_handled)} {time.monotonic():.6f} {event.call_id} {event.dedup_key}\n"
    )
