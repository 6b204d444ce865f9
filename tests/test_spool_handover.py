"""A multi-process ingress never strands a spooled callback nor publishes one twice: a child
killed with records in its spool, spools left by a run with more processes, and a spool left
by a version that spooled into the root all reach the work queue exactly once.

Real ``callback-sink ingress`` processes on the real broker; an outage is a TCP relay that is
not listening yet, so the shared broker is never stopped.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from callback_sink.ingress.spool import Record, Spool
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.broker import queue_depth, take_all
from tests.conftest import SECRET, callback, signed
from tests.processes import SinkProcess
from tests.test_ingress_outage import Relay
from tests.waiting import until


def environment(settings: Settings, root: Path, processes: int, amqp_url: str) -> dict[str, str]:
    return {
        "SINK_SECRETS": SECRET,
        "SINK_AMQP_URL": amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_SPOOL_DIR": str(root),
        "SINK_PORT": str(free_port()),
        "SINK_INGRESS_PROCESSES": str(processes),
        "SINK_PUBLISH_TIMEOUT": "2",
    }


def segments_under(root: Path) -> list[Path]:
    return sorted(root.glob("*.seg")) + sorted(root.glob("*/*.seg"))


async def until_empty(root: Path, within: float = 60.0) -> None:
    await until(lambda: not segments_under(root), within, what=f"{root} to hold no segment")


async def published_once(settings: Settings, expected: dict[str, bytes]) -> None:
    """Each expected body is in the work queue exactly once, and nothing else is."""
    queue = f"{settings.topology_prefix}.work"
    messages = await take_all(settings.amqp_url, queue, len(expected), within=60)
    assert sorted(m.message_id or "" for m in messages) == sorted(expected)
    assert {m.message_id: m.body for m in messages} == expected
    assert await queue_depth(settings.amqp_url, queue) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_spools_left_by_a_bigger_run_and_by_an_older_version_are_drained_exactly_once(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    expected: dict[str, bytes] = {}
    for directory, tag in ((root / "1", "was1"), (root / "3", "was3"), (root, "legacy")):
        async with Spool(directory, 1 << 20) as spool:
            for i in range(40):
                call_id = f"XXXX#XXXX_{tag}{i}"
                expected[call_id] = signed(callback(call_id))
                await spool.append(Record("muc:apply", call_id, expected[call_id]))
    sink = SinkProcess("ingress", environment(settings, root, 1, settings.amqp_url))
    await sink.start("ingress.connected")
    try:
        await published_once(settings, expected)
        await until_empty(root)
    finally:
        assert await sink.stop() == 0
    adopted = {str(line["directory"]) for line in sink.events("spool.adopted")}
    assert adopted == {str(root / "1"), str(root / "3"), str(root)}
    assert sum(int(str(line["records"])) for line in sink.events("spool.adopted")) == 120


async def test_a_child_killed_with_records_in_its_spool_is_restarted_and_each_record_published_once(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "spool"
    relay = Relay(settings.amqp_url)  # not listening yet: every callback goes to a spool
    sink = SinkProcess("ingress", environment(settings, root, 2, relay.url))
    await sink.start("ingress.listening")
    try:
        await sink.wait_for_line("ingress.listening", count=2)
        url = f"http://127.0.0.1:{sink.env['SINK_PORT']}/callbacks"
        expected = {f"XXXX#XXXX_kill{i}": signed(callback(f"XXXX#XXXX_kill{i}")) for i in range(40)}
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection, a new child
        async with aiohttp.ClientSession(connector=connector) as session:
            for body in expected.values():
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
        [victim, *_] = [k for k in (0, 1) if list((root / str(k)).glob("*.seg"))]
        [pid] = [line["pid"] for line in sink.events("ingress.listening")
                 if line["process"] == victim]  # fmt: skip
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        await sink.wait_for_line("supervisor.child_died")
        await sink.wait_for_line("ingress.listening", count=3)  # restarted
        await relay.start()  # the broker is back
        await sink.wait_for_line("ingress.connected")
        await published_once(settings, expected)
        await until_empty(root)
        children = [int(str(line["pid"])) for line in sink.events("ingress.listening")]
        assert await sink.stop(signal.SIGTERM) == 0
        assert not any(alive(child) for child in children)
    finally:
        await sink.kill()
        await relay.cut()
    [died] = sink.events("supervisor.child_died")
    assert (died["process"], died["exit_code"]) == (victim, -signal.SIGKILL)
