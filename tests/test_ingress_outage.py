"""While RabbitMQ is out of reach the ingress still answers 200, from its fsynced spool, and
every spooled callback reaches the work queue exactly once when the broker is back.

Outages are made without touching the shared broker: an unreachable URL (a closed port), or
a TCP relay to the broker that a test cuts and restores.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs
from yarl import URL

from callback_sink.ingress.app import SPOOL, STOPPING, create_app
from callback_sink.ingress.drainer import Drainer
from callback_sink.ingress.publisher import Publisher
from callback_sink.ingress.spool import Record, Spool
from callback_sink.service import run_ingress
from callback_sink.sink.errors import PublishError
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.broker import queue_depth, take_all
from tests.conftest import callback, post, signed
from tests.waiting import until

Client = TestClient[Any, Any]
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"


class Relay:
    """A TCP relay to RabbitMQ: :meth:`cut` is a broker outage for its clients only."""

    def __init__(self, target: str) -> None:
        url = URL(target)
        self.target = (url.host or "127.0.0.1", url.port or 5672)
        self.port = free_port()
        self.url = str(url.with_port(self.port))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Client]:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


def spool_of(client: Client) -> Spool:
    return client.server.app[SPOOL]


async def ready(client: Client) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


@pytest.fixture
def spooled(settings: Settings, tmp_path: Path) -> Settings:
    """The test's settings with a spool of its own."""
    return replace(settings, spool_dir=str(tmp_path / "spool"))


async def expect_in_work_queue(settings: Settings, call_ids: list[str]) -> None:
    """Each call id arrives in the work queue once, and nothing else does."""
    queue = f"{settings.topology_prefix}.work"
    messages = await take_all(settings.amqp_url, queue, len(call_ids), within=30)
    assert sorted(m.message_id or "" for m in messages) == sorted(call_ids)
    assert await queue_depth(settings.amqp_url, queue) == 0


async def test_an_unreachable_broker_gets_200_from_the_spool_then_a_later_ingress_drains_it(
    spooled: Settings,
) -> None:
    bodies = {f"XXXX#XXXX_out{i}": signed(callback(f"XXXX#XXXX_out{i}")) for i in range(20)}
    with capture_logs() as logs:
        async with running(replace(spooled, amqp_url=UNREACHABLE)) as outage:
            statuses = await asyncio.gather(*(post(outage, body) for body in bodies.values()))
            assert statuses == [200] * 20
            status, body = await ready(outage)
            assert status == 200  # no broker, but room in the spool: still taking callbacks
            assert body["broker"] is False
            assert body["spool_records"] == 20
            assert body["spool_bytes"] > sum(len(b) for b in bodies.values())
    accepted = [line for line in logs if line["event"] == "callback.accepted"]
    assert len(accepted) == 20
    assert {line["durable"] for line in accepted} == {"spool"}
    assert all("broker not connected" in line["broker_error"] for line in accepted)

    with capture_logs() as logs:
        async with running(spooled) as back:
            await until(lambda: spool_of(back).records == 0)
            status, body = await ready(back)
            assert (status, body["broker"], body["spool_records"]) == (200, True, 0)
            assert body["spool_bytes"] == 0
    await expect_in_work_queue(spooled, list(bodies))
    drained = [line for line in logs if line["event"] == "spool.drained"]
    assert sum(line["records"] for line in drained) == 20
    assert list(Path(spooled.spool_dir).glob("*.seg")) == []


async def test_an_ingress_started_without_a_broker_connects_in_the_background(
    spooled: Settings,
) -> None:
    relay = Relay(spooled.amqp_url)  # not listening yet: the broker is "down" at start-up
    settings = replace(spooled, amqp_url=relay.url)
    call_ids = [f"XXXX#XXXX_late{i}" for i in range(5)]
    try:
        async with running(settings) as client:
            for call_id in call_ids:
                assert await post(client, signed(callback(call_id))) == 200
            assert spool_of(client).records == 5
            await relay.start()
            await until(lambda: spool_of(client).records == 0)
            assert (await ready(client))[1]["broker"] is True
            assert await post(client, signed(callback("XXXX#XXXX_live"))) == 200
    finally:
        await relay.cut()
    await expect_in_work_queue(spooled, [*call_ids, "XXXX#XXXX_live"])


async def test_a_connection_lost_mid_stream_spools_then_drains_each_callback_once(
    spooled: Settings,
) -> None:
    relay = Relay(spooled.amqp_url)
    await relay.start()
    settings = replace(spooled, amqp_url=relay.url)
    call_ids = [f"XXXX#XXXX_flap{i}" for i in range(60)]
    try:
        with capture_logs() as logs:
            async with running(settings) as client:
                for call_id in call_ids[:20]:
                    assert await post(client, signed(callback(call_id))) == 200
                await relay.cut()
                for call_id in call_ids[20:40]:
                    assert await post(client, signed(callback(call_id))) == 200
                assert spool_of(client).records >= 20
                await relay.start()
                await until(lambda: spool_of(client).records == 0)
                for call_id in call_ids[40:]:
                    assert await post(client, signed(callback(call_id))) == 200
    finally:
        await relay.cut()
    durable = [line["durable"] for line in logs if line["event"] == "callback.accepted"]
    assert durable[:20] == ["broker"] * 20
    assert durable[20:40] == ["spool"] * 20
    await expect_in_work_queue(spooled, call_ids)


async def test_a_full_spool_answers_503_with_one_loud_log_line(spooled: Settings) -> None:
    first, second = signed(callback("XXXX#XXXX_fits")), signed(callback("XXXX#XXXX_no_room"))
    settings = replace(spooled, amqp_url=UNREACHABLE, spool_max_bytes=len(first) + 100)
    async with running(settings) as client:
        assert await post(client, first) == 200
        with capture_logs() as logs:
            assert await post(client, second) == 503
        status, body = await ready(client)
        assert (status, body["ready"], body["spool_records"]) == (503, False, 1)
    assert [line["event"] for line in logs if "status" in line] == ["spool.full"]
    [full] = [line for line in logs if line["event"] == "spool.full"]
    assert full["log_level"] == "error"
    assert full["status"] == 503
    assert full["spool_max_bytes"] == settings.spool_max_bytes
    assert "broker not connected" in full["broker_error"]


async def test_a_stopping_ingress_reports_not_ready(spooled: Settings) -> None:
    async with running(spooled) as client:
        client.server.app[STOPPING].set()
        status, body = await ready(client)
        assert (status, body["ready"], body["stopping"], body["broker"]) == (503, False, True, True)


async def test_stopping_in_the_middle_of_a_drain_loses_nothing_and_sends_nothing_twice(
    spooled: Settings,
) -> None:
    call_ids = [f"XXXX#XXXX_stop{i}" for i in range(1000)]
    async with Spool(spooled.spool_dir, spooled.spool_max_bytes) as spool:
        for call_id in call_ids:
            await spool.append(Record("muc:apply", call_id, signed(callback(call_id))))
    queue = f"{spooled.topology_prefix}.work"
    async with running(spooled) as client:
        await until(lambda: spool_of(client).records < len(call_ids))
    async with Spool(spooled.spool_dir, spooled.spool_max_bytes) as spool:
        left = spool.records
        remaining: list[str] = []
        while (batch := await spool.read_batch(1000)) is not None:
            remaining += [r.call_id for r in batch.records]
            await spool.commit(batch, len(batch.records))
    assert left == len(remaining)
    published = len(call_ids) - left
    messages = await take_all(spooled.amqp_url, queue, published, within=30)
    assert await queue_depth(spooled.amqp_url, queue) == 0
    sent = [m.message_id or "" for m in messages]
    assert sorted(sent + remaining) == sorted(call_ids)


class FlakyPublisher:
    """Confirms everything except the first attempt at each call id in ``fail_once``."""

    ready = True

    def __init__(self, fail_once: set[str]) -> None:
        self.fail_once = fail_once
        self.confirmed: list[str] = []

    async def publish(self, name: str, call_id: str, body: bytes) -> None:
        if call_id in self.fail_once:
            self.fail_once.discard(call_id)
            raise PublishError("no publisher confirm within 5.0s")
        self.confirmed.append(call_id)


async def test_a_failed_republish_keeps_that_record_and_the_later_ones_for_the_next_pass(
    tmp_path: Path,
) -> None:
    publisher = FlakyPublisher({"c2"})
    async with Spool(tmp_path / "spool", 1 << 20) as spool:
        for i in range(6):
            await spool.append(Record("muc:apply", f"c{i}", b"{}"))
        drainer = Drainer(spool, cast(Publisher, publisher), batch=4)
        with capture_logs() as logs:
            drainer.start()
            await until(lambda: spool.records == 0)
            await drainer.stop(grace=5)
    # c3 was confirmed in the failed batch but not committed past c2: sent again (at least once)
    assert publisher.confirmed == ["c0", "c1", "c3", "c2", "c3", "c4", "c5"]
    assert [line["event"] for line in logs if line["event"].startswith("spool.")] == [
        "spool.draining",
        "spool.republish_failed",
        "spool.drained",
        "spool.draining",
        "spool.drained",
    ]


async def test_run_ingress_stops_on_its_stop_event_and_keeps_the_spool(
    spooled: Settings,
) -> None:
    settings = replace(spooled, amqp_url=UNREACHABLE, port=free_port())
    stop = asyncio.Event()
    with capture_logs() as logs:
        service = asyncio.create_task(run_ingress(settings, stop))
        await until(lambda: any(line["event"] == "ingress.listening" for line in logs))
        url = f"http://127.0.0.1:{settings.port}{settings.path}"
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                body = signed(callback(f"XXXX#XXXX_svc{i}"))
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
        stop.set()
        await asyncio.wait_for(service, 30)
    assert [line["event"] for line in logs][-1] == "ingress.stopped"
    async with Spool(Path(settings.spool_dir) / "0", settings.spool_max_bytes) as spool:
        assert spool.records == 3  # an in-process ingress spools as child 0 of the root
