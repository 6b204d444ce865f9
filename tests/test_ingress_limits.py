"""Slow and many clients: read deadlines free their connections, caps answer a fast 503, and
500 honest concurrent connections are all served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from callback_sink.ingress.app import EDGE
from callback_sink.sink.settings import Settings
from tests.conftest import callback, post, signed
from tests.ingress_server import Client, Serve, serving
from tests.waiting import until

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


async def _connect(client: Client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", client.port)


def _head(body_length: int) -> bytes:
    return (
        b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(body_length).encode() + b"\r\n\r\n"
    )


async def test_a_half_sent_request_head_is_closed_after_the_read_deadline(serve: Serve) -> None:
    ingress = await serve(read_timeout_s=0.5)
    reader, writer = await _connect(ingress)
    writer.write(b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Ty")
    assert await post(ingress, signed(callback())) == 200  # a fast client meanwhile
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, without an answer
    writer.close()
    assert ingress.app[EDGE].counters.refusals["request head not received in time"] == 1


async def test_a_connection_that_never_sends_is_closed_after_the_read_deadline(
    serve: Serve,
) -> None:
    ingress = await serve(read_timeout_s=0.5)
    reader, writer = await _connect(ingress)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_a_body_slower_than_the_read_deadline_is_refused_408(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve(read_timeout_s=0.5)
    body = signed(callback())
    reader, writer = await _connect(ingress)
    with capture_logs() as logs:
        writer.write(_head(len(body)) + body[:10])
        answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert [line["status"] for line in logs if line["event"] == "callback.rejected"] == [408]


async def test_connections_over_the_cap_get_a_fast_503_and_the_next_one_is_served(
    serve: Serve,
) -> None:
    ingress = await serve(max_connections=3, read_timeout_s=30)
    held = [await _connect(ingress) for _ in range(3)]
    guard = ingress.app[EDGE].guard
    await until(lambda: guard.open == 3, 10, what="the ingress to hold 3 connections")
    reader, writer = await _connect(ingress)
    writer.write(_head(2) + b"{}")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 503")
    assert b'{"error":"overloaded"}' in answer
    for _, held_writer in held:
        held_writer.close()
    await until(lambda: guard.open == 0, 10, what="the ingress to see them closed")
    assert await post(ingress, signed(callback())) == 200
    assert ingress.app[EDGE].counters.requests[503] == 1


async def test_requests_over_the_in_flight_cap_get_a_fast_503(serve: Serve) -> None:
    ingress = await serve(max_inflight=1, read_timeout_s=30)
    body = signed(callback())
    reader, writer = await _connect(ingress)
    writer.write(_head(len(body)) + body[:10])  # in flight: its handler waits for the body
    edge = ingress.app[EDGE]
    await until(lambda: edge.inflight == 1, 10, what="one request in flight")
    with capture_logs() as logs:
        assert await post(ingress, signed(callback())) == 503
    [line] = [line for line in logs if line["event"] == "callback.rejected"]
    assert line["reason"] == "too many requests in flight"
    writer.write(body[10:])
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()


async def test_five_hundred_honest_concurrent_connections_are_all_served(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve()
    connector = aiohttp.TCPConnector(limit=500)
    url = ingress.make_url("/callbacks")
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(url, data=signed(callback()), headers=JSON) as response:
                await response.read()
                return response.status

        statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(500))), 120)
    assert statuses == [200] * 500


async def test_readiness_reports_connections_and_requests_in_flight(serve: Serve) -> None:
    ingress = await serve()
    body: dict[str, Any] = await (await ingress.get("/readyz")).json()
    assert body["ready"] is True and body["publisher"] == "ready"
    assert body["connections"] >= 1 and body["inflight"] == 0
