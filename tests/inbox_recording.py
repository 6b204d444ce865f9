"""Handler module for the inbox fault scenarios (tests/faults/test_inbox.py): two handlers
doing the same work per callback, one plain and one transactional.

- ``plain`` appends ``plain|dedup key`` to its process's ledger (:func:`tests.recording.record`),
  a side effect outside any transaction: at-least-once.
- ``booked`` (``@on(..., transactional=True)``) inserts ``booked|dedup key`` into the table
  ``SINK_TEST_INBOX_ROWS`` of ``SINK_INBOX_URL``, which has no unique constraint of its own:
  only the inbox keeps a second row out.

Each then spends ``SINK_TEST_AFTER_EFFECT_S`` (default 0.05 s) on "the rest of its work",
the window in which a worker killed has done the effect but not yet marked it done.
"""

from __future__ import annotations

import asyncio
import os

import sqlalchemy as sa

from callback_sink import Event, Transaction, on
from tests.recording import record


def _after_effect() -> float:
    return float(os.environ.get("SINK_TEST_AFTER_EFFECT_S", "0.05"))


@on("*", name="plain")
async def plain(event: Event) -> None:
    record("plain", event)
    await asyncio.sleep(_after_effect())  # the scenario: work after the side effect


@on("*", name="booked", transactional=True)
async def booked(event: Event, tx: Transaction) -> None:
    table = os.environ["SINK_TEST_INBOX_ROWS"]
    await tx.execute(
        sa.text(f"INSERT INTO {table} (handler, key) VALUES ('booked', :key)"),
        {"key": event.dedup_key},
    )
    await asyncio.sleep(_after_effect())  # the scenario: work after the side effect
