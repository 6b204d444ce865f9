"""Backfill from Easemob's callback storage, emulated: an outage longer than the spool, then
``callback-sink backfill``; every stored callback is handled once, old ones included."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.backfill import backfill
from callback_sink.easemob.emulator import Emulator
from callback_sink.easemob.emulator.storage import Bucket
from callback_sink.easemob.models import NewGroup
from callback_sink.easemob.rest import GroupClient
from callback_sink.easemob.settings import EasemobSettings, EmulatorSettings
from callback_sink.easemob.storage import date_key
from callback_sink.ingress.app import EXEMPTIONS, create_app
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.conftest import SECRET, Recorder, callback, post, signed
from tests.directory_fixtures import client_settings_for
from tests.waiting import drain_and_stop

DAY_MS = 24 * 3600 * 1000


def closed_port_url() -> str:
    """A URL nothing listens on: the sink during its outage."""
    return f"http://127.0.0.1:{free_port()}/callbacks"


@dataclass
class Storage:
    emulator: Emulator
    server: TestServer
    client_settings: EasemobSettings


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    """An emulator with the callback storage on, whose sink is down."""
    settings = EmulatorSettings(sink_url=closed_port_url(), callback_storage=True,
                                callback_timeout=2.0)  # fmt: skip
    emulator = Emulator(settings, callback_secret=SECRET)
    server = TestServer(emulator.app())
    await server.start_server()
    yield Storage(emulator, server, client_settings_for(server, settings))
    await server.close()


@pytest.fixture
async def sink(settings: Settings, redis_url: str) -> AsyncIterator[tuple[Settings, Any]]:
    """A running ingress sharing Redis (dedup and exemptions) with backfill."""
    shared = replace(settings, dedup_url=redis_url)
    client = TestClient(TestServer(create_app(shared)))
    await client.start_server()
    yield shared, client
    await client.close()
    redis = aioredis.Redis.from_url(redis_url)
    keys = [key async for key in redis.scan_iter(f"{settings.topology_prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def outage(storage: Storage, groups: int = 3) -> int:
    """REST changes while the sink is down: their callbacks fail twice and are stored."""
    async with GroupClient(storage.client_settings) as client:
        for index in range(groups):
            group = await client.create_group(NewGroup(name=f"g{index}", owner="alice"))
            await client.add_members(group, ["bob", "carol"])
    await storage.emulator.callbacks.drain()
    stored = storage.emulator.storage.stored
    assert stored == len(storage.emulator.callbacks.outbox) == groups * 3
    return stored


async def test_the_storage_lists_buckets_with_easemob_s_field_names(storage: Storage) -> None:
    stored = await outage(storage, groups=1)
    async with GroupClient(storage.client_settings) as client:
        answer = await client.transport.call("GET", "/callbacks/storage/info")
    assert answer["data"] == [{"date": date_key(dt.datetime.now(dt.UTC)), "size": stored,
                               "retry": 0}]  # fmt: skip
    assert {"path", "uri", "timestamp", "organization", "application", "action", "duration",
            "applicationName"} <= set(answer)  # fmt: skip


async def test_the_dry_run_counts_and_re_sends_nothing(
    storage: Storage, settings: Settings
) -> None:
    stored = await outage(storage, groups=2)
    out = io.StringIO()
    report = await backfill(storage.client_settings, settings, target=closed_port_url(),
                            dry_run=True, out=out)  # fmt: skip
    assert (report.callbacks, report.requested) == (stored, 0)
    assert out.getvalue().startswith(f"{stored} stored callback(s) in 1 bucket(s)")
    assert storage.emulator.storage.info()[0]["retry"] == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    none = await backfill(storage.client_settings, settings, target=closed_port_url(),
                          since=later, dry_run=True, out=io.StringIO())  # fmt: skip
    assert none.callbacks == 0


async def test_after_an_outage_backfill_gets_every_stored_callback_handled_once(
    storage: Storage, sink: tuple[Settings, Any], start_worker: Any, recorder: Recorder,
    redis_store: Any,
) -> None:  # fmt: skip
    stored = await outage(storage)
    shared, ingress = sink
    worker = await start_worker(recorder.handler("tests.backfill"), store=redis_store)
    target = str(ingress.make_url(shared.path))
    storage.emulator.faults.fail_next(429, 2)  # the REST client backs off and carries on
    report = await backfill(storage.client_settings, shared, target=target, out=io.StringIO())
    assert (report.callbacks, report.requested, report.refused) == (stored, stored, 0)
    await storage.emulator.storage.drain()
    await recorder.wait_for(stored)
    # Run again: Easemob re-sends the bucket, dedup absorbs every callback.
    await backfill(storage.client_settings, shared, target=target, out=io.StringIO())
    await storage.emulator.storage.drain()
    assert storage.emulator.storage.resent == 2 * stored
    await drain_and_stop(worker)  # a second run of a handler, if any, has landed now
    seen = Counter(event.call_id for event in recorder.of("tests.backfill"))
    assert set(seen) == {doc["callId"] for doc in storage.emulator.callbacks.outbox}
    assert set(seen.values()) == {1}
    assert storage.emulator.storage.info()[0]["retry"] == 2


def old_callback(days: float) -> bytes:
    """A callback of the emulated app, signed, stamped ``days`` ago."""
    appkey = EmulatorSettings().appkey
    doc = callback(f"{appkey}_{uuid.uuid4()}", timestamp=int(time.time() * 1000 - days * DAY_MS))
    return signed(doc)


async def test_backfill_opens_the_replay_window_for_the_buckets_it_asks_for(
    storage: Storage, sink: tuple[Settings, Any], start_worker: Any, recorder: Recorder,
    redis_store: Any,
) -> None:  # fmt: skip
    shared, ingress = sink
    await start_worker(recorder.handler("tests.old"), store=redis_store)
    bodies = [old_callback(2), old_callback(2)]
    assert await post(ingress, bodies[0]) == 401  # older than SINK_MAX_AGE_S: a replay
    stamp = orjson.loads(bodies[0])["timestamp"]
    key = date_key(dt.datetime.fromtimestamp(stamp / 1000, dt.UTC) + dt.timedelta(minutes=2))
    storage.emulator.storage.buckets[key] = Bucket(bodies=bodies)
    target = str(ingress.make_url(shared.path))
    report = await backfill(storage.client_settings, shared, target=target, out=io.StringIO())
    assert report.requested == 2
    await storage.emulator.storage.drain()
    await recorder.wait_for(2)
    assert ingress.server.app[EXEMPTIONS].admitted == 2
    # The exemption covers that bucket only: a callback from another time is still refused.
    assert await post(ingress, old_callback(1.5)) == 401


async def test_without_a_shared_store_old_callbacks_stay_refused_and_backfill_says_so(
    storage: Storage, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    client = TestClient(TestServer(create_app(settings)))  # memory:// dedup: nothing shared
    await client.start_server()
    try:
        body = old_callback(2)
        stamp = orjson.loads(body)["timestamp"]
        key = date_key(dt.datetime.fromtimestamp(stamp / 1000, dt.UTC))
        storage.emulator.storage.buckets[key] = Bucket(bodies=[body])
        target = str(client.make_url(settings.path))
        await backfill(storage.client_settings, settings, target=target, out=io.StringIO())
        await storage.emulator.storage.drain()
        assert storage.emulator.storage.resend_failed == 1
        assert "SINK_MAX_AGE_S" in capsys.readouterr().err
    finally:
        await client.close()


def test_the_commands_run_the_emulator_s_storage_and_a_dry_run(tmp_path: Any) -> None:
    """`callback-sink emulate --callback-storage` and `callback-sink backfill --dry-run`."""
    port = free_port()
    env = {**os.environ, "SINK_EMULATOR_PORT": str(port), "SINK_LOG_FORMAT": "console",
           "SINK_EMULATOR_CALLBACK_SECRET": SECRET}  # fmt: skip
    cli = [sys.executable, "-m", "callback_sink"]
    emulate = subprocess.Popen([*cli, "emulate", "--callback-storage", "--sink-url",
                                closed_port_url()], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert emulate.stdout is not None
        assert "callback storage on" in emulate.stdout.readline().decode() + (
            emulate.stdout.readline().decode()
        )
        client = {"SINK_EASEMOB_HOST": f"http://127.0.0.1:{port}",
                  "SINK_EASEMOB_ORG": "easemob-demo", "SINK_EASEMOB_APP": "chatdemoui",
                  "SINK_EASEMOB_CLIENT_ID": "emulator-client-id",
                  "SINK_EASEMOB_CLIENT_SECRET": "emulator-client-secret"}  # fmt: skip
        done = subprocess.run([*cli, "backfill", "--target", closed_port_url(), "--dry-run"],
                              env={**env, **client}, cwd=tmp_path, capture_output=True,
                              timeout=60, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "\n0 stored callback(s) in 0 bucket(s); dry run" in "\n" + done.stdout
    finally:
        emulate.terminate()
        emulate.wait(30)
