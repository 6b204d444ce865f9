"""callback-sink inside an application that has its own ``handlers``, ``worker``, ``sink``,
``ingress`` and ``easemob`` packages: the sink installs only ``callback_sink``, so nothing of
the application's is shadowed and nothing of the sink's is taken from the application."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import aiohttp

from callback_sink.sink.settings import Settings
from tests.conftest import SECRET, callback, signed
from tests.processes import SinkProcess
from tests.test_init import shadow_packages

HANDLER = '''\
"""The application's handler module, in the application's own ``handlers`` package."""

from callback_sink import Event, get_logger, on

log = get_logger("app")


@on("muc:apply", name="app.applications")
async def on_apply(event: Event) -> None:
    log.info("app.saw_apply", call_id=event.call_id, group_id=event.group_id)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_in_a_project_with_its_own_handlers_package_handles_a_callback(
    settings: Settings, tmp_path: Path
) -> None:
    app = shadow_packages(tmp_path / "app")
    (app / "handlers" / "mine.py").write_text(HANDLER)
    port = _free_port()
    env = {
        "PYTHONPATH": str(app),  # the application's path only: not this repository's
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_SECRETS": SECRET,
        "SINK_HANDLERS": "handlers.mine",
        "SINK_PORT": str(port),
        "SINK_INGRESS_PROCESSES": "1",
        "SINK_SPOOL_DIR": str(tmp_path / "spool"),
    }
    sink = SinkProcess("run", env, cwd=app)
    assert "callback_sink" not in os.listdir(app)
    try:
        await sink.start("worker.started")
        await sink.wait_for_line("ingress.listening")
        [started] = sink.events("worker.started")
        assert started["handlers"] == ["app.applications"]
        body = signed(callback())
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/callbacks",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
        await sink.wait_for_line("app.saw_apply")
        await sink.wait_for_line("callback.handled")
        [handled] = sink.events("callback.handled")
        assert handled["handler"] == "app.applications" and handled["outcome"] == "ok"
    finally:
        await asyncio.shield(sink.stop())
