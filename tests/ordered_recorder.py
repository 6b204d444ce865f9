"""Handler module for the ordered-mode process test: every run of a group callback appends
``monotonic-time group seq pid`` to a file of its process under ``SINK_TEST_RECORD_DIR``, so
a test can merge the files of several workers into one timeline per group."""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from pathlib import Path

from callback_sink.handlers import Event, on


@on("muc")
async def in_order(event: Event) -> None:
    await asyncio.sleep(0.001)  # a little work, so that runs of one group could overlap
    _append(f"{time.monotonic():.6f} {event.group_id} {event.raw['seq']} {os.getpid()}\n")


def _append(line: str) -> None:
    directory = Path(os.environ["SINK_TEST_RECORD_DIR"])
    with open(directory / f"{os.getpid()}.log", "a", encoding="utf-8") as ledger:
        ledger.write(line)


def timelines(directory: Path) -> dict[str, list[int]]:
    """Each group's handled sequence numbers, in the order the handler ran them."""
    runs = []
    for path in directory.glob("*.log"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stamp, group, seq, _ = line.split()
            runs.append((float(stamp), group, int(seq)))
    found: dict[str, list[int]] = defaultdict(list)
    for _, group, seq in sorted(runs):
        found[group].append(seq)
    return dict(found)
