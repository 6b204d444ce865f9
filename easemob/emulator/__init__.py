"""A local stand-in for Easemob: the group REST API on in-memory state, sending the legacy
``muc`` callbacks of every change to a sink. ``callback-sink emulate`` runs it."""

from __future__ import annotations

import asyncio

from aiohttp import web

from callback_sink.easemob.emulator.app import Emulator
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.sink import logs

__all__ = ["Emulator", "serve"]

log = logs.get("emulator")


async def serve(emulator: Emulator, stop: asyncio.Event) -> None:
    """Listen on the configured address until ``stop`` is set, then deliver what is queued."""
    settings: EmulatorSettings = emulator.settings
    runner = web.AppRunner(emulator.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info(
        "emulator.listening",
        url=f"http://{settings.host}:{settings.port}/{settings.org}/{settings.app}",
        sink_url=settings.sink_url or None,
    )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("emulator.stopped", callbacks=len(emulator.callbacks.outbox))
