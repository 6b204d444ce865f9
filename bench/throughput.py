"""Throughput benchmark of callback-sink: a real ingress and real workers, on this machine.

For each dedup store asked for (``--dedup``), with a fresh uuid topology prefix, a free
loopback port and a no-op counting handler (``counting_handler.py``):

1. **together**: ``callback-sink ingress`` and ``callback-sink worker`` run; after a warm-up
   batch, ``--count`` signed callbacks are posted over ``--concurrency`` connections.
   Measured: accepted requests/s and latency of the 200 answers; end-to-end callbacks/s
   until the worker has handled the last one (timed by the handler itself); CPU by process.
2. **ingress alone**: the worker is stopped and ``--count`` more callbacks are posted; they
   pile up in the queue. Measured: requests/s and latency without a worker to compete with.
3. **backlog**: a new worker starts on that backlog. Measured: callbacks/s from its first
   handled callback to its last.

Checked: the handler saw every accepted callback exactly once (by dedup key), and once the
workers stopped, the work and dead-letter queues are empty (anything unacknowledged would
be back in the work queue).
Resident memory of the ingress and the first worker is read from ``/proc`` at the end of
phase 1. Everything made (exchanges, queues, Redis keys, temporary directories, processes)
is removed at the end, even after an error; ``--timeout`` bounds the whole run; only
loopback addresses are used.

Usage: ``.venv/bin/python bench/throughput.py [--count N] [--concurrency C]
[--dedup memory|redis|both]``. Prints Markdown tables on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import procs
import redis.asyncio as aioredis
import report
import traffic
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError, ChannelClosed

from sink.settings import Settings
from sink.topology import Topology
from worker.settle import BUSY_DELAY

REPO = Path(__file__).resolve().parent.parent
#: The CLI of the venv running this script (``.venv/bin/callback-sink``).
CLI = str(Path(sys.executable).parent / "callback-sink")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
DEDUP_URLS = {"memory": "memory://", "redis": REDIS_URL}
SECRET = "bench-secret"
#: How long a child may take to be ready (listening / consuming), seconds.
READY_TIMEOUT = 30.0
#: How long a worker may take to handle what it was given, seconds.
DRAIN_TIMEOUT = 120.0
#: Bound on each cleanup step, so that cleaning up never hangs the benchmark.
CLEANUP_TIMEOUT = 15.0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def child_env(prefix: str, port: int, dedup_url: str, spool: Path) -> dict[str, str]:
    """The process environment without any ``SINK_*`` of the caller, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        SINK_SECRETS=SECRET,
        SINK_AMQP_URL=AMQP_URL,
        SINK_TOPOLOGY_PREFIX=prefix,
        SINK_DEDUP_URL=dedup_url,
        SINK_HOST="127.0.0.1",
        SINK_PORT=str(port),
        SINK_SPOOL_DIR=str(spool),
        SINK_HANDLERS="bench.counting_handler",
        SINK_LOG_LEVEL="warning",
    )
    return env


@contextlib.asynccontextmanager
async def broker() -> AsyncIterator[AbstractConnection]:
    """A plain connection: a robust channel would answer passive declares from its cache."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        yield connection
    finally:
        await connection.close()


async def queue_counts(channel: AbstractChannel, name: str) -> tuple[int, int]:
    """(ready messages, consumers) of an existing queue, by a passive declare."""
    queue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return int(result.message_count or 0), int(result.consumer_count or 0)


async def wait_handled(
    progress: procs.Progress, target: int, worker: procs.Child, within: float
) -> float:
    """Wait until the worker handled ``target`` callbacks; the monotonic time of the last."""
    try:
        async with asyncio.timeout(within):
            return await progress.wait_for(target, worker)
    except TimeoutError:
        raise worker.failure(
            f"handled {progress.handled} of {target} callbacks within {within:.0f} s"
        ) from None


class Run:
    """One dedup store's run: its topology, its children, its figures."""

    def __init__(self, dedup: str, args: argparse.Namespace, work: Path) -> None:
        self.dedup = dedup
        self.concurrency: int = args.concurrency
        self.topology = Topology(f"bench-{uuid.uuid4().hex[:12]}")
        port = procs.free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}{Settings().path}"
        self.env = child_env(self.topology.prefix, port, DEDUP_URLS[dedup], work / "spool")
        self.work = work
        self.children: list[procs.Child] = []
        tag = self.topology.prefix
        self.warm = traffic.build(args.warmup, SECRET, f"{tag}-warm")
        self.batch = traffic.build(args.count, SECRET, tag)
        self.backlog = traffic.build(args.count, SECRET, f"{tag}-backlog")

    async def start(self, name: str, progress: procs.Progress | None = None) -> procs.Child:
        feed = progress.feed if progress is not None else None
        child = await procs.start(name, [CLI, name], self.env, self.work, feed)
        self.children.append(child)
        return child

    async def ingress(self) -> procs.Child:
        ingress = await self.start("ingress")
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                ingress.check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{self.base}/readyz") as response:
                        if response.status == 200:
                            return ingress
                await asyncio.sleep(0.1)
        raise ingress.failure(f"was not ready at {self.base}/readyz within {READY_TIMEOUT:.0f} s")

    async def worker(self, channel: AbstractChannel) -> tuple[procs.Child, procs.Progress]:
        progress = procs.Progress()
        worker = await self.start("worker", progress)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            worker.check_alive()
            if (await queue_counts(channel, self.topology.work_queue))[1] >= 1:
                return worker, progress
            await asyncio.sleep(0.1)
        raise worker.failure(f"did not consume within {READY_TIMEOUT:.0f} s")

    async def send(self, batch: traffic.Batch, what: str) -> traffic.Load:
        load = await traffic.send(self.url, batch.bodies, self.concurrency)
        refused = {k: v for k, v in load.outcomes.items() if k != "200"}
        log(f"{self.dedup}: {what}: {load.accepted} accepted in "
            f"{load.finished - load.started:.2f} s, refused {refused or 'none'}")  # fmt: skip
        return load

    async def stop(self, child: procs.Child) -> None:
        status = await child.stop()
        if status != 0:
            log(f"{self.dedup}: {child.name} pid {child.pid} exited with status {status}")

    async def measure(self) -> report.Row:
        log(f"{self.dedup}: {len(self.batch.bodies)} callbacks per phase, "
            f"{len(self.batch.names)} event names, prefix {self.topology.prefix}")  # fmt: skip
        async with broker() as connection:
            channel = await connection.channel()
            ingress = await self.ingress()
            worker, progress = await self.worker(channel)
            log(f"{self.dedup}: ingress pid {ingress.pid} on {self.base}, worker pid {worker.pid}")

            # 1. together
            warmed = await self.send(self.warm, "warm-up")
            await wait_handled(progress, warmed.accepted, worker, DRAIN_TIMEOUT)
            cpu_before = procs.sample_cpu([ingress, worker])
            together = await self.send(self.batch, "together")
            expected = warmed.accepted + together.accepted
            handled_at = await wait_handled(progress, expected, worker, DRAIN_TIMEOUT)
            cpu = procs.cpu_percent(cpu_before, procs.sample_cpu([ingress, worker]))
            memory = ingress.memory(), worker.memory()
            await self.stop(worker)
            handled_first = progress.handled

            # 2. ingress alone: the callbacks wait in the queue
            cpu_before = procs.sample_cpu([ingress])
            alone = await self.send(self.backlog, "ingress alone")
            other_alone = procs.cpu_percent(cpu_before, procs.sample_cpu([ingress]))["other"]

            # 3. a new worker eats the backlog
            drainer, drained = await self.worker(channel)
            cpu_before = procs.sample_cpu([ingress, drainer])
            await wait_handled(drained, alone.accepted, drainer, DRAIN_TIMEOUT)
            other_backlog = procs.cpu_percent(cpu_before, procs.sample_cpu([ingress, drainer]))
            await self.stop(drainer)
            await self.stop(ingress)

            left = sum([
                (await queue_counts(channel, self.topology.work_queue))[0],
                (await queue_counts(channel, self.topology.dead_queue))[0],
            ])  # fmt: skip
        return report.Row(
            dedup=self.dedup,
            together=together,
            handled_at=handled_at,
            alone=alone,
            backlog_rate=(drained.handled - 1) / max(drained.last_at - drained.first_at, 1e-9),
            handled=handled_first + drained.handled,
            distinct=len(progress.keys | drained.keys),
            expected=expected + alone.accepted,
            left_in_queues=left,
            ingress=memory[0],
            worker=memory[1],
            cpu=cpu,
            other_cpu=(cpu["other"], other_alone, other_backlog["other"]),
        )

    async def cleanup(self) -> None:
        """Stop the children; delete the queues, exchanges and Redis keys; never raise."""
        for child in self.children:
            await child.stop()
        try:
            async with asyncio.timeout(CLEANUP_TIMEOUT):
                await delete_topology(self.topology)
        except (AMQPError, OSError, TimeoutError) as exc:
            log(f"could not delete topology {self.topology.prefix}: {type(exc).__name__}: {exc}")
        if self.dedup == "redis":
            pattern = f"{self.topology.prefix}:*"
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    log(f"{self.dedup}: deleted {await delete_redis_keys(pattern)} Redis keys")
            except (OSError, TimeoutError, aioredis.RedisError) as exc:
                log(f"could not delete Redis keys {pattern}: {exc}")


async def delete_topology(topology: Topology) -> None:
    """Every queue the sink can have made for the prefix: work, dead, and the delay queue of
    each retry delay (settings' defaults and the busy delay; handlers here never ask for
    others). Deleting a queue or exchange that does not exist is not an error in RabbitMQ."""
    delays_ms = {max(1, int(s * 1000)) for s in (*Settings().retry_delays, BUSY_DELAY)}
    queues = [topology.work_queue, topology.dead_queue]
    queues += [topology.delay_queue(ms) for ms in sorted(delays_ms)]
    async with broker() as connection:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except ChannelClosed:
                channel = await connection.channel()
        for exchange in (topology.exchange, topology.dead_exchange):
            await channel.exchange_delete(exchange)


async def delete_redis_keys(pattern: str) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        return int(await client.delete(*keys)) if keys else 0
    finally:
        await client.aclose()


async def describe(args: argparse.Namespace) -> str:
    """One line on the machine, the services and the settings the figures depend on."""
    async with broker() as connection:
        assert connection.transport is not None
        version = connection.transport.connection.server_properties.get("version", "?")
        rabbit = version.decode() if isinstance(version, bytes) else str(version)
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        redis_version = (await client.info("server")).get("redis_version", "?")
    finally:
        await client.aclose()
    settings = Settings()
    return (
        f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
        f"RabbitMQ {rabbit}, Redis {redis_version}; worker prefetch {settings.prefetch}, "
        f"concurrency {settings.concurrency}; {args.count} callbacks per phase over "
        f"{args.concurrency} connections, after {args.warmup} warm-up callbacks"
    )


async def main(args: argparse.Namespace) -> int:
    # SIGTERM cancels like Ctrl-C does, so that the clean-up below runs for it too.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    modes = ["memory", "redis"] if args.dedup == "both" else [args.dedup]
    rows = []
    async with asyncio.timeout(args.timeout):
        header = await describe(args)
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="callback-sink-bench-") as work:
                run = Run(mode, args, Path(work))
                try:
                    rows.append(await run.measure())
                finally:
                    await run.cleanup()
    print(header)
    print()
    print(report.tables(rows, args.concurrency))
    failed = False
    for row in rows:
        for problem in row.problems():
            log(f"{row.dedup}: WARNING: {problem}")
            failed = True
    return 1 if failed else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="callbacks per phase (5000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections at once (32)")
    parser.add_argument("--dedup", choices=["memory", "redis", "both"], default="both")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up callbacks (200)")
    parser.add_argument("--timeout", type=float, default=300.0, help="whole run, s (300)")
    args = parser.parse_args()
    for name in ("count", "concurrency", "warmup", "timeout"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    try:
        sys.exit(asyncio.run(main(arguments)))
    except procs.ChildFailed as exc:
        log(f"FAILED: {exc}")
        sys.exit(2)
    except TimeoutError:
        log(f"FAILED: the run took longer than --timeout {arguments.timeout:.0f} s")
        sys.exit(2)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; children stopped and topology deleted")
        sys.exit(130)
    except (AMQPError, OSError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc} (are RabbitMQ and Redis up? make services)")
        sys.exit(2)
