"""``Expect: 100-continue``: a body the ingress would refuse is refused from its headers (413
over ``SINK_BODY_LIMIT``, 503 when the body budget has no room), never invited with ``100
Continue``; one it would read is invited, on the callback and the pre-send routes alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from callback_sink.ingress.app import EDGE
from callback_sink.sink.settings import Settings
from tests.conftest import callback, signed
from tests.ingress_server import serving_both

Client = TestClient[Any, Any]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MIB = 1024 * 1024
#: The upload of the report: 100 MB announced, against the default 1 MiB SINK_BODY_LIMIT.
HUGE = 100 * 1000 * 1000


@pytest.fixture
async def start(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """An ingress serving both routes (callbacks and pre-send), with setting overrides."""
    async with serving_both() as serve:
        yield lambda **overrides: serve([], replace(settings, **overrides))


async def ask(client: Client, path: str, length: int) -> tuple[Stream, bytes]:
    """Send only the head of a POST announcing ``length`` bytes; read the first answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    async with asyncio.timeout(5):
        first = await reader.readuntil(b"\r\n\r\n")
    return (reader, writer), first


@pytest.mark.parametrize("path", ["/callbacks", "/presend"])
async def test_a_100_mb_upload_is_answered_413_without_being_invited(
    start: Callable[..., Awaitable[Client]], path: str
) -> None:
    client = await start()
    (reader, writer), first = await ask(client, path, HUGE)
    try:
        assert first.startswith(b"HTTP/1.1 413"), first
        async with asyncio.timeout(5):
            rest = await reader.read()  # then the connection closes, the body never read
        assert b"100 Continue" not in first + rest
    finally:
        writer.close()
    assert client.app[EDGE].counters.refusals["body exceeds SINK_BODY_LIMIT"] == 1


async def test_a_body_the_budget_cannot_hold_now_is_answered_503_without_being_invited(
    start: Callable[..., Awaitable[Client]],
) -> None:
    client = await start(body_budget_bytes=2 * MIB)  # 1.5 MiB of it for bodies over 64 KiB
    budget = client.app[EDGE].budget
    budget.used = MIB  # as if slow senders held 1 MiB of it
    try:
        (_, writer), first = await ask(client, "/callbacks", MIB)
        writer.close()
    finally:
        budget.used = 0
    assert first.startswith(b"HTTP/1.1 503"), first
    assert budget.used == 0  # checked, not kept


@pytest.mark.parametrize("path", ["/callbacks", "/presend"])
async def test_a_body_within_the_limits_is_invited_with_100_continue_and_answered_200(
    start: Callable[..., Awaitable[Client]], path: str
) -> None:
    client = await start()
    body = signed(callback())
    (reader, writer), first = await ask(client, path, len(body))
    try:
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer
