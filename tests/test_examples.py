"""The spec's examples and everything that signs them for sending stamp the current time, as
Easemob does, so that a sink refusing old callbacks (``SINK_MAX_AGE_S``) accepts them; the
spec's own timestamps stay available for tests that compare exact bodies."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import os
import sys
import time
from pathlib import Path
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


ROOT = Path(__file__).resolve().parent.parent
#: The specification, kept in the repository (a copy of the project's shared spec) so that
#: this check runs on every clone.
SPEC = ROOT / "tests" / "spec"


def test_every_example_has_a_call_id_of_its_own() -> None:
    """The spec reuses placeholder callIds; sent as they are (``send --keep-ids``), a shared one
    would make the second example a duplicate or a forgery of the first."""
    call_ids = [e.body["callId"] for e in load_examples()]
    assert len(set(call_ids)) == len(call_ids)


def test_the_shipped_examples_are_what_the_extraction_tool_makes_of_the_spec() -> None:
    assert (SPEC / "PROTOCOL.md").exists(), f"the specification is not at {SPEC}"
    spec = importlib.util.spec_from_file_location(
        "extract_examples", ROOT / "tools" / "extract_examples.py"
    )
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    shipped = [{"source": e.source, "body": e.body} for e in load_examples()]
    assert tool.extract(SPEC) == shipped


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


async def refusing_server(status: int, answer: dict[str, Any]) -> TestServer:
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer, status=status)

    app = web.Application()
    app.router.add_post("/callbacks", refuse)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_send_without_a_configured_secret_says_it_used_the_development_one_and_why_401(
    tmp_path: Path,
) -> None:
    dev_secret = "d3v-secret-0123456789"
    (tmp_path / ".sink-dev-secret").write_text(dev_secret + "\n")
    server = await refusing_server(401, {"error": "signature does not match any secret"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINK_SECRETS")}
    try:
        send = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callback_sink", "send", str(server.make_url("/callbacks")),
            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(send.communicate(), 60)
    finally:
        await server.close()
    stdout, stderr = out.decode(), err.decode()
    assert send.returncode == 1
    assert "signed with the development secret in .sink-dev-secret (SINK_SECRETS unset)" in stderr
    hint = [line for line in stderr.splitlines() if "refused with 401" in line]
    assert hint == [
        f"callback-sink send: {len(load_examples())} refused with 401 (signature does not match "
        "any secret): they were signed with the development secret in .sink-dev-secret "
        "(SINK_SECRETS unset); set SINK_SECRETS (or pass --secret) to the sink's secret"
    ]
    assert dev_secret not in stdout + stderr


async def test_send_gives_no_401_hint_when_the_sink_refuses_for_another_reason() -> None:
    server = await refusing_server(400, {"error": "not JSON"})
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            assert await send_examples(str(server.make_url("/callbacks")), SECRET) == 1
    finally:
        await server.close()
    assert "401" not in err.getvalue()
