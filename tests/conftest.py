"""Fixtures on the real RabbitMQ and Redis.

Each test gets its own uuid-named topology prefix (exchanges, queues, Redis keys) and cleans
up after itself. A missing service skips the test locally and fails it under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from callback_sink.handlers.registry import Handler, Options, Registry
from callback_sink.ingress.app import create_app
from callback_sink.sink import logs
from callback_sink.sink.events import Event
from callback_sink.sink.examples import now_ms
from callback_sink.sink.settings import Settings
from callback_sink.sink.signature import sign
from callback_sink.sink.topology import Topology
from callback_sink.sink.topology import delete as delete_topology
from callback_sink.worker.consumer import Worker
from callback_sink.worker.dedup import DedupStore, MemoryStore
from callback_sink.worker.redis_store import RedisStore
from tests.needs import missing
from tests.repo_clean import untracked_top_level

AMQP_URL = os.environ.get("SINK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("SINK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "test-secret"
#: Short retry delays so that retry tests take well under a second per attempt.
TEST_DELAYS = (0.2, 0.4)

logs.configure("console", "debug")

_UNTRACKED_AT_START = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_UNTRACKED_AT_START] = untracked_top_level()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left new untracked files in the repository's top level."""
    before = session.stash.get(_UNTRACKED_AT_START, None)
    after = untracked_top_level()
    if before is None or after is None:
        return
    if left := sorted(after - before):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the tests left new untracked files in the repository: {', '.join(left)}"
        if reporter is not None:
            reporter.write_line(f"ERROR: {message} (write under tmp_path)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _handshake(check: Callable[[], Awaitable[None]]) -> None:
    """Run an async handshake to completion from sync code, even inside a running loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check()).result()  # type: ignore[arg-type]


def _unavailable(what: str, exc: BaseException) -> None:
    missing(f"{what} is not reachable: {exc}")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    async def handshake() -> None:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        await connection.close()

    try:
        _handshake(handshake)
    except Exception as exc:
        _unavailable("RabbitMQ", exc)
    return AMQP_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    async def handshake() -> None:
        client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        _handshake(handshake)
    except Exception as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def settings(amqp_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Settings]:
    settings = Settings(
        spool_dir=str(tmp_path / "spool"),
        secrets=(SECRET, "another-rule-secret"),
        amqp_url=amqp_url,
        topology_prefix=prefix,
        retry_delays=TEST_DELAYS,
        max_attempts=3,
        handler_timeout=10.0,
        shutdown_timeout=10.0,
        publish_timeout=5.0,
        drain_delay=0.0,
        worker_port=0,
        metrics_linger_s=0.0,
    )
    yield settings
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        delays = [int(d * 1000) for d in (*TEST_DELAYS, 1.0, 0.1)]
        await delete_topology(channel, Topology(prefix), delays)
    finally:
        await connection.close()


@pytest.fixture
async def redis_store(redis_url: str, prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, prefix)
    yield store
    await store.purge()
    await store.close()


@pytest.fixture
async def ingress(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    """A running ingress on a free port, connected to the real broker."""
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


def signed(body: dict[str, Any], secret: str = SECRET) -> bytes:
    """A callback body with a correct ``security`` for ``secret``."""
    doc = dict(body)
    doc["security"] = sign(doc["callId"], secret, doc["timestamp"])
    return orjson.dumps(doc)


def callback(call_id: str | None = None, operation: str = "apply", **extra: Any) -> dict[str, Any]:
    """A minimal legacy group callback, stamped with the current time as Easemob does (an
    ingress refuses callbacks older than its maximum age); pass ``timestamp=`` to override."""
    return {
        "chat_type": "muc",
        "callId": call_id or f"XXXX#XXXX_{uuid.uuid4().int % 10**18}",
        "payload": {"operation": operation, "is_chatroom": False, "muc_id": "a#b_42@conference."},
        "group_id": "42",
        "from": "alice",
        "to": "bob",
        "eventType": "chat",
        "timestamp": now_ms(),
        **extra,
    }


async def post(client: TestClient[Any, Any], body: bytes, **headers: str) -> int:
    response = await client.post(
        "/callbacks", data=body, headers={"Content-Type": "application/json", **headers}
    )
    await response.read()
    return response.status


class Recorder:
    """Records every (handler, call id, name, group id, chat-room flag) it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Event]] = []
        self._changed = asyncio.Condition()

    def handler(
        self,
        name: str,
        subscriptions: tuple[str, ...] = ("*",),
        behaviour: Callable[[Event], Awaitable[None]] | None = None,
        **options: Any,
    ) -> Handler:
        async def run(event: Event) -> None:
            if behaviour is not None:
                await behaviour(event)
            async with self._changed:
                self.calls.append((name, event))
                self._changed.notify_all()

        return Handler(name, run, subscriptions, Options(**options))

    def of(self, handler: str) -> list[Event]:
        return [event for name, event in self.calls if name == handler]

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls) >= count)

        await asyncio.wait_for(enough(), within)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def start_worker(settings: Settings) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start workers with the given handlers (and dedup store); all stopped after the test."""
    started: list[Worker] = []

    async def start(
        *handlers: Handler, store: DedupStore | None = None, **overrides: Any
    ) -> Worker:
        worker = Worker(replace(settings, **overrides), Registry(handlers), store or MemoryStore())
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[DedupStore]:
    """Each dedup store kind (memory, the real Redis), for tests holding both to the same
    semantics."""
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_store = RedisStore(request.getfixturevalue("redis_url"), prefix)
    yield redis_store
    await redis_store.purge()
    await redis_store.close()
