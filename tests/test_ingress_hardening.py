"""Harden, round 2: slow 1 MiB senders cannot buffer more than the body budget, outsiders hold
no connection slot, idle keep-alives make room for a genuine client, a connection carries a
bounded number of requests, and the over-cap 503 is answered under both event loops."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from callback_sink.ingress import eventloop
from callback_sink.ingress.app import EDGE
from callback_sink.ingress.supervisor import CRASH_LOOP_FILE
from callback_sink.sink.settings import Settings
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving
from tests.waiting import until

MIB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


def _head(length: int) -> bytes:
    return (
        b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


async def _slow_sender(port: int | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Announces 1 MiB, sends 64 KiB of it and stalls."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head(MIB) + b"x" * 65536)
    await writer.drain()
    return reader, writer


async def test_slow_1_mib_senders_are_held_to_the_body_budget_and_a_callback_still_gets_200(
    serve: Serve,
) -> None:
    budget = 8 * MIB  # a quarter of it is kept for bodies up to 64 KiB
    ingress = await serve(body_budget_bytes=budget, read_timeout_s=30)
    edge = ingress.app[EDGE]
    senders = [await _slow_sender(ingress.port) for _ in range(40)]
    # 6 MiB for large bodies: 6 are admitted, the other 34 get a fast 503 before being read.
    answers = await asyncio.gather(*(r.read() for r, _ in senders[6:]))
    assert all(a.startswith(b"HTTP/1.1 503") for a in answers)
    await until(lambda: edge.budget.used == 6 * MIB, 10, what="6 bodies holding the budget")
    assert edge.counters.refusals["body budget exhausted (SINK_BODY_BUDGET_BYTES)"] == 34
    async with asyncio.timeout(1):
        assert await post(ingress, signed(callback())) == 200
    assert edge.budget.used == 6 * MIB  # the genuine callback gave its bytes back
    for _, writer in senders:
        writer.close()
    await until(lambda: edge.budget.used == 0, 10, what="the budget released")


async def test_a_chunked_body_is_counted_as_it_streams(serve: Serve) -> None:
    ingress = await serve(body_budget_bytes=4 * MIB)
    body = signed(callback())

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    async with aiohttp.ClientSession() as session:
        url = ingress.make_url("/callbacks")
        async with session.post(url, data=chunks(), headers=JSON) as response:
            assert response.status == 200
    assert ingress.app[EDGE].budget.used == 0


async def test_a_budget_smaller_than_a_body_allows_is_refused_at_start_up() -> None:
    from callback_sink.sink.errors import ConfigError

    with pytest.raises(ConfigError, match="SINK_BODY_BUDGET_BYTES"):
        Settings.from_env({"SINK_BODY_LIMIT": str(MIB), "SINK_BODY_BUDGET_BYTES": str(MIB)})


async def test_connections_from_outside_the_allow_list_are_closed_at_once_and_hold_no_slot(
    serve: Serve,
) -> None:
    allowed = Settings.from_env({"SINK_ALLOWED_NETWORKS": "127.0.0.1/32"}).allowed_networks
    ingress = await serve(allowed_networks=allowed, max_connections=20, read_timeout_s=30)
    guard = ingress.app[EDGE].guard
    outsiders = []
    for _ in range(40):  # twice the cap, from 127.0.0.2: outside the list
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", ingress.port, local_addr=("127.0.0.2", 0)
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        outsiders.append((reader, writer))
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in outsiders))
    assert answers == [b""] * 40  # closed unanswered, before their request was read
    assert guard.open == 0
    async with asyncio.timeout(1):
        assert await post(ingress, signed(callback())) == 200
    for _, writer in outsiders:
        writer.close()


async def test_idle_keep_alive_connections_make_room_for_a_genuine_client_within_a_second(
    serve: Serve,
) -> None:
    ingress = await serve(max_connections=20, read_timeout_s=30)
    guard = ingress.app[EDGE].guard
    body = signed(callback())
    idle = []
    for _ in range(20):  # every slot: one tiny request each, then kept alive and idle
        reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
        writer.write(_head(len(body)) + body)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        idle.append((reader, writer))
    await until(lambda: guard.open == 20, 10, what="20 idle keep-alive connections")
    async with asyncio.timeout(1):
        assert await post(ingress, signed(callback())) == 200
    assert guard.reclaimed >= 1 and guard.open <= 20
    for _, writer in idle:
        writer.close()


async def test_a_connection_is_closed_after_its_maximum_number_of_requests(serve: Serve) -> None:
    ingress = await serve(keepalive_max_requests=2)
    connection = []
    for _ in range(2):
        response = await ingress.post("/callbacks", data=signed(callback()), headers=JSON)
        await response.read()
        connection.append(response.headers.get("Connection", "keep-alive").lower())
    assert connection == ["keep-alive", "close"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_connection_over_the_cap_gets_the_canned_503_under_each_event_loop(
    settings: Settings, loop: str
) -> None:
    async def scenario() -> bytes:
        async for start in serving(settings):
            ingress = await start(max_connections=1, read_timeout_s=30)
            _, busy = await asyncio.open_connection("127.0.0.1", ingress.port)
            busy.write(b"POST /callbacks HTTP/1.1\r\nHost: x\r\n")  # half a head: not idle
            guard = ingress.app[EDGE].guard
            await until(lambda: guard.open == 1, 10, what="the one slot taken")  # noqa: B023
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
            writer.write(_head(2) + b"{}")
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            busy.close()
            return answer
        raise AssertionError("serving() yielded nothing")

    answer = await asyncio.to_thread(eventloop.run, scenario(), loop)
    assert answer.startswith(b"HTTP/1.1 503")
    assert answer.endswith(b'{"error":"overloaded"}')


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """``eventloop.run`` freezes the heap it starts on: not the test process's, past a test."""
    yield
    gc.unfreeze()


def test_the_loop_starts_with_the_start_up_objects_out_of_the_collectors_reach() -> None:
    async def frozen() -> int:
        return gc.get_freeze_count()

    gc.unfreeze()  # whatever an earlier test froze
    try:
        assert eventloop.run(frozen(), "asyncio") > 10_000  # the modules imported, and more
    finally:
        gc.unfreeze()


async def test_readiness_is_false_while_the_supervisor_reports_a_crash_loop(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve()  # spools into <spool_dir>/0: the root is its parent
    state = Path(settings.spool_dir) / CRASH_LOOP_FILE
    state.write_text('{"deaths": 6, "window_s": 60}')
    response = await ingress.get("/readyz")
    assert response.status == 503
    assert (await response.json())["crash_loop"] == {"deaths": 6, "window_s": 60}
    state.unlink()
    assert (await ingress.get("/readyz")).status == 200
