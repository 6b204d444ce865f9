"""Handler modules for crash tests: handlers that take their worker process down.

- ``lethal`` (``muc:kick``): a callback whose callId ends in ``_poison`` kills the process
  outright (``os._exit``: no cleanup, its claim outlives it); every other kick is recorded.
- ``hold`` (``muc:apply``): with ``SINK_TEST_HOLD=1`` it logs ``test.holding`` and never
  returns (for a test that SIGKILLs that worker); otherwise it records.
"""

from __future__ import annotations

import asyncio
import os

from callback_sink.handlers import Event, on
from callback_sink.sink import logs
from tests.recording import record

log = logs.get("tests")


@on("muc:kick")
async def lethal(event: Event) -> None:
    if event.call_id.endswith("_poison"):
        os._exit(3)
    record("lethal", event)


@on("muc:apply")
async def hold(event: Event) -> None:
    if os.environ.get("SINK_TEST_HOLD") == "1":
        log.info("test.holding", call_id=event.call_id)
        await asyncio.sleep(3600)  # the scenario: a handler held until its worker is killed
    record("hold", event)
