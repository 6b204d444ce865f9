"""Fault injection on real processes: a paced stream of signed callbacks, a ledger of what
got 200, and a final reckoning that every accepted callback was handled exactly once per
handler.

The sender behaves like Easemob: a non-200 answer (or no answer) is retried once at once,
then the callback is given up. Figures are printed and appended to ``FIGURES_FILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callback_sink.sink import names
from callback_sink.sink.events import from_document
from callback_sink.sink.examples import load_examples, resign
from callback_sink.testing.ports import free_port
from tests.processes import SinkProcess
from tests.recording import SUBSCRIPTIONS, read_records

SECRET = "fault-secret"
FIGURES_FILE = Path(os.environ.get("SINK_FAULT_FIGURES", "/tmp/callback-sink-fault-figures.jsonl"))


@dataclass
class Figures:
    scenario: str
    sent: int = 0
    accepted: int = 0  # answered 200 (first try or Easemob's one retry)
    refused: int = 0  # non-200 on both tries: Easemob would drop these
    non_200_answers: int = 0  # every non-200 answer, retried or not
    handled: int = 0  # handler runs recorded
    duplicates_suppressed: int = 0  # `duplicate` outcomes in the workers' logs
    lost: int = 0  # (handler, callback) pairs accepted but never handled
    extra_runs: int = 0  # handler runs beyond the first for one callback
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def report(self) -> str:
        line = orjson.dumps(asdict(self)).decode()
        with FIGURES_FILE.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return line


class Sink:
    """An ingress process and worker processes on one uuid-named topology."""

    def __init__(self, workdir: Path, amqp_url: str, redis_url: str, **extra: str) -> None:
        self.prefix = f"fault-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/callbacks"
        self.records = workdir / "records"
        self.records.mkdir()
        self.spool = workdir / "spool"
        self.env = {
            "SINK_AMQP_URL": amqp_url,
            "SINK_TOPOLOGY_PREFIX": self.prefix,
            "SINK_SECRETS": SECRET,
            "SINK_PORT": str(self.port),
            "SINK_SPOOL_DIR": str(self.spool),
            "SINK_DEDUP_URL": redis_url,
            "SINK_HANDLERS": "tests.recording",
            "SINK_RETRY_DELAYS": "0.2,0.5,1",
            "SINK_MAX_ATTEMPTS": "4",
            "SINK_PUBLISH_TIMEOUT": "2",
            "SINK_TEST_RECORD_DIR": str(self.records),
            **extra,
        }
        self.ingress: SinkProcess | None = None
        self.workers: list[SinkProcess] = []
        self.retired: list[SinkProcess] = []  # stopped or killed processes, logs kept

    async def start_ingress(self) -> SinkProcess:
        self.ingress = await SinkProcess("ingress", self.env).start("ingress.listening")
        return self.ingress

    async def start_worker(self, **extra: str) -> SinkProcess:
        worker = await SinkProcess("worker", {**self.env, **extra}).start("worker.started")
        self.workers.append(worker)
        return worker

    def retire(self, process: SinkProcess) -> None:
        if process in self.workers:
            self.workers.remove(process)
        if process is self.ingress:
            self.ingress = None
        self.retired.append(process)

    def all_processes(self) -> list[SinkProcess]:
        return [*self.workers, *([self.ingress] if self.ingress else []), *self.retired]

    def duplicates(self) -> int:
        return sum(
            line.get("outcome") == "duplicate"
            for p in self.all_processes()
            for line in p.events("callback.handled")
        )

    async def close(self) -> None:
        for process in self.all_processes():
            await process.kill()
        await _delete_topology(self.env["SINK_AMQP_URL"], self.prefix)


def stream_bodies(count: int, tag: str) -> list[tuple[str, bytes, str]]:
    """``count`` callbacks cycling through every spec example: (dedup key, body, name)."""
    examples = load_examples()
    out = []
    for i in range(count):
        example = examples[i % len(examples)]
        body = resign(example.body, SECRET, call_id=f"{tag}-{i}-{example.body['callId']}")
        event = from_document(body)
        out.append((event.dedup_key, orjson.dumps(body), event.name))
    return out


def expected_pairs(accepted: list[tuple[str, str]]) -> set[str]:
    """Every ``handler|key`` that must be recorded for the accepted (key, name) pairs."""
    return {
        f"{handler}|{key}"
        for key, name in accepted
        for handler, subs in SUBSCRIPTIONS.items()
        if any(names.matches(sub, name) for sub in subs)
    }


class Sender:
    """Sends a stream at a steady rate; Easemob-style single immediate retry."""

    def __init__(self, url: str, bodies: list[tuple[str, bytes, str]], rate: float) -> None:
        self.url = url
        self.bodies = bodies
        self.rate = rate
        self.accepted: list[tuple[str, str]] = []
        self.refused: list[str] = []
        self.non_200 = 0
        self.progress = 0
        self.statuses: Counter[int] = Counter()
        self.started_at = time.monotonic()

    async def run(self, concurrency: int = 16) -> None:
        queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(key: str, body: bytes, name: str) -> None:
                for _ in range(2):  # Easemob: one immediate retry, then gives up
                    status = await self._post(session, body)
                    self.statuses[status] += 1
                    if status == 200:
                        self.accepted.append((key, name))
                        return
                    self.non_200 += 1
                self.refused.append(key)

            async def consumer() -> None:
                while True:
                    key, body, name = await queue.get()
                    try:
                        await one(key, body, name)
                    finally:
                        self.progress += 1
                        queue.task_done()

            workers = [asyncio.create_task(consumer()) for _ in range(concurrency)]
            started = self.started_at = time.monotonic()
            for i, item in enumerate(self.bodies):
                await asyncio.sleep(max(0.0, started + i / self.rate - time.monotonic()))
                await queue.put(item)
            await queue.join()
            for w in workers:
                w.cancel()

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> int:
        try:
            async with session.post(
                self.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def reached(self, fraction: float) -> None:
        target = int(len(self.bodies) * fraction)
        while self.progress < target:
            await asyncio.sleep(0.02)


async def reckon(sink: Sink, sender: Sender, figures: Figures, within: float = 120.0) -> Figures:
    """Wait until every accepted callback is handled (or time runs out) and count."""
    expected = expected_pairs(sender.accepted)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if expected <= set(read_records(sink.records)):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # anything redelivered late would show up now
    counts = read_records(sink.records)
    figures.sent = len(sender.bodies)
    figures.accepted = len(sender.accepted)
    figures.refused = len(sender.refused)
    figures.non_200_answers = sender.non_200
    figures.handled = sum(counts.values())
    figures.duplicates_suppressed = sink.duplicates()
    figures.lost = len(expected - set(counts))
    figures.extra_runs = sum(n - 1 for n in counts.values() if n > 1)
    figures.notes["unexpected_records"] = len(set(counts) - expected)
    figures.seconds = round(time.monotonic() - sender.started_at, 1)
    print(f"\nFAULT FIGURES {figures.report()}")
    return figures


async def run_cmd(*argv: str, within: float = 120.0) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), within)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {err.decode(errors='replace')}")


def have(command: str) -> bool:
    return shutil.which(command) is not None


async def restart_redis() -> None:
    """Stop Redis (it keeps nothing on disk) and start it again as the machine does."""
    await run_cmd("redis-cli", "-p", "6379", "shutdown", "nosave")
    await asyncio.sleep(1.0)
    await run_cmd(
        "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379",
        "--save", "", "--appendonly", "no",
    )  # fmt: skip
    for _ in range(100):
        with contextlib.suppress(RuntimeError):
            await run_cmd("redis-cli", "ping")
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("redis did not come back")


async def _delete_topology(amqp_url: str, prefix: str) -> None:
    import aio_pika

    from callback_sink.sink.topology import Topology, delete

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await delete(channel, Topology(prefix), [200, 500, 1000])
    finally:
        await connection.close()
