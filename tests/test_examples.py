"""The spec's examples and everything that signs them for sending stamp the current time, as
Easemob does, so that a sink refusing old callbacks (``SINK_MAX_AGE_S``) accepts them; the
spec's own timestamps stay available for tests that compare exact bodies."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from callback_sink.cli import send_examples
from callback_sink.sink.examples import load_examples, resign
from callback_sink.sink.signature import verify

SECRET = "example-secret"
#: A callback signed "now" must be this fresh, ms (generous for a slow test machine).
FRESH_MS = 60_000


def is_fresh(timestamp: int) -> bool:
    return abs(time.time() * 1000 - timestamp) < FRESH_MS


def test_the_examples_load_with_the_specs_own_timestamps_by_default() -> None:
    stamps = [e.body["timestamp"] for e in load_examples()]
    assert not any(is_fresh(stamp) for stamp in stamps)
    assert load_examples()[0].body["timestamp"] == 1644914583273


def test_the_examples_can_be_loaded_stamped_with_the_current_time() -> None:
    original, stamped = load_examples(), load_examples(now=True)
    assert all(is_fresh(e.body["timestamp"]) for e in stamped)
    for old, new in zip(original, stamped, strict=True):
        assert {**new.body, "timestamp": old.body["timestamp"]} == old.body


def test_resign_stamps_the_current_time_and_signs_it() -> None:
    body = resign(load_examples()[0].body, SECRET, call_id="XXXX#XXXX_new")
    assert is_fresh(body["timestamp"])
    assert verify("XXXX#XXXX_new", body["timestamp"], body["security"], [SECRET])


def test_resign_can_keep_the_bodys_own_timestamp() -> None:
    example = load_examples()[0].body
    body = resign(example, SECRET, now=False)
    assert body["timestamp"] == example["timestamp"]
    assert verify(body["callId"], body["timestamp"], body["security"], [SECRET])


async def test_send_posts_every_example_signed_and_stamped_with_the_current_time() -> None:
    received: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        received.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/callbacks", record)
    server = TestServer(app)
    await server.start_server()
    try:
        assert await send_examples(str(server.make_url("/callbacks")), SECRET) == 0
    finally:
        await server.close()
    assert len(received) == len(load_examples())
    for body in received:
        assert is_fresh(body["timestamp"])
        assert verify(body["callId"], body["timestamp"], body["security"], [SECRET])
