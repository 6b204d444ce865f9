"""Handler modules for tests that run real worker processes.

Every successful run appends ``handler|dedup key`` to a file of its process under
``SINK_TEST_RECORD_DIR``, so a test can count, across any number of processes and across
Redis or broker restarts, how often each handler ran for each callback. Some handlers
misbehave on request, through environment variables:

- ``SINK_TEST_FLAKY_FAILURES=N``: ``flaky`` fails the first N attempts of each callback;
- ``SINK_TEST_FIX_FILE=path``: ``broken`` fails until that file exists;
- ``SINK_TEST_SLOW_SECONDS=s``: ``first`` sleeps that long before recording.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from callback_sink.handlers import Event, on

_attempts: Counter[str] = Counter()


def record(handler: str, event: Event) -> None:
    directory = Path(os.environ["SINK_TEST_RECORD_DIR"])
    with open(directory / f"{os.getpid()}.log", "a", encoding="utf-8") as ledger:
        ledger.write(f"{handler}|{event.dedup_key}\n")
        ledger.flush()
        os.fsync(ledger.fileno())


def read_records(directory: Path) -> Counter[str]:
    """How often each ``handler|key`` was recorded, by every process."""
    counts: Counter[str] = Counter()
    for path in directory.glob("*.log"):
        counts.update(line for line in path.read_text(encoding="utf-8").splitlines() if line)
    return counts


@on("*")
async def first(event: Event) -> None:
    slow = float(os.environ.get("SINK_TEST_SLOW_SECONDS", "0"))
    if slow:
        await asyncio.sleep(slow)  # the scenario: a slow handler (SINK_TEST_SLOW_SECONDS)
    record("first", event)


@on("muc", "group_op")
async def second(event: Event) -> None:
    record("second", event)


@on("roster")
async def flaky(event: Event) -> None:
    _attempts[event.dedup_key] += 1
    if _attempts[event.dedup_key] <= int(os.environ.get("SINK_TEST_FLAKY_FAILURES", "0")):
        raise ConnectionError(f"flaky attempt {_attempts[event.dedup_key]}")
    record("flaky", event)


@on("session")
async def broken(event: Event) -> None:
    fix = os.environ.get("SINK_TEST_FIX_FILE")
    if fix and not os.path.exists(fix):
        raise RuntimeError("broken until fixed")
    record("broken", event)


#: What each handler above subscribes to, for tests computing expected counts.
SUBSCRIPTIONS = {
    "first": ("*",),
    "second": ("muc", "group_op"),
    "flaky": ("roster",),
    "broken": ("session",),
}
