"""callback-sink side by side with its ceilings and with the usual alternative, on this machine.

Every scenario runs once per round; rounds are interleaved (each round runs every scenario,
in an order rotated from the previous round's), and the table shows the median over rounds
(range in brackets). Each ratio is computed inside each round, between two figures measured
minutes apart at most, then the median of those is taken.

Scenarios (see bench/README.md for what each one measures and why):

- ``noop``: an aiohttp app that answers 200 and does nothing (the HTTP ceiling, and the proof
  that wrk is not the bottleneck);
- ``bare-pub-1p`` / ``bare-pub-2p``: a bare aio-pika loop (1 or 2 processes) publishing
  persistent messages to the sink's quorum queue, awaiting each confirm, with as many
  confirms in flight as the ingress gets connections;
- ``ingress-1p-info`` / ``ingress-1p-warning`` / ``ingress-2p-info``: ``callback-sink
  ingress`` (``--processes N``), real RabbitMQ, at the log level named;
- ``celery`` / ``celery-confirm``: FastAPI + Celery ``.delay()`` under ``uvicorn --workers
  2``, without and with ``confirm_publish`` (its own virtualenv, ``bench/.venv-alt``);
- ``bare-consume`` / ``bare-consume-setnx``: bare aio-pika consume + ack (+ one Redis
  ``SET NX``) of a pre-filled queue;
- ``drain-memory`` / ``drain-redis``: ``callback-sink worker`` on the same pre-filled queue;
- ``e2e``: ingress + worker (Redis dedup); the maximum end-to-end rate (wrk, closed loop),
  then open-loop load at 25, 50 and 75 % of it, latency from POST due to handler done.

Every run counts non-200 answers, callbacks lost and callbacks handled twice. Usage:
``.venv/bin/python bench/bench.py [--quick] [--rounds N] [--duration S]``; ``make bench``.
Exit status: 0 all counted runs clean; 1 something was refused, lost or handled twice;
2 the benchmark could not run; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import bodies
import orjson
import procs
import redis.asyncio as aioredis
from aio_pika.exceptions import AMQPError, ChannelClosed, ChannelNotFoundEntity

from sink.settings import Settings
from sink.topology import Topology

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "callback-sink")
ALT_VENV = BENCH / ".venv-alt"
ALT_REQUIREMENTS = BENCH / "alt-requirements.txt"
RESULTS = BENCH / "results"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "bench-secret"
READY_TIMEOUT = 30.0
DRAIN_TIMEOUT = 180.0
CLEANUP_TIMEOUT = 20.0
#: wrk settings of every HTTP row: 2 threads (one per core), as many connections as below.
WRK_THREADS = 2
#: Retry tiers a worker may have made delay queues for (README: Retry delays); deleted after.
DELAY_TIERS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
#: Rows whose processes are callback-sink's own (the peak RSS target applies to them).
SINK_ROWS = ("ingress-1p-info", "ingress-1p-warning", "ingress-2p-info")
SINK_ROWS += ("drain-memory", "drain-redis", "e2e")
#: Peak RSS target per sink process: 150 MB (decimal) in MiB.
RSS_TARGET_MIB = 150e6 / 2**20


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    rounds: int
    duration: float  # seconds of load per throughput row
    warmup: float  # seconds of wrk / publisher warm-up before it
    connections: int  # wrk connections = confirms in flight of the bare publisher
    drain_count: int  # messages in the pre-filled queue of each drain row
    level_seconds: float  # open-loop seconds per e2e level
    levels: tuple[float, ...]
    limit: int  # quick mode: callbacks per wrk thread (0: by duration)
    alt: bool  # run the FastAPI + Celery rows
    only: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One scenario in one round."""

    value: float  # the row's figure (req/s, msg/s, callbacks/s)
    generator: str
    non_200: int | None = None
    lost: int | None = None
    twice: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # role -> VmHWM
    extra: dict[str, Any] = field(default_factory=dict)


# --- services: queues, Redis keys -------------------------------------------------------------


async def queue_depth(name: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return 0
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def consumers_of(name: str) -> int:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return 0
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def settled_depth(name: str, expected: int, within: float = 10.0) -> int:
    """The queue's depth once it reached ``expected`` or stopped changing for 1.5 s (quorum
    queue counts trail the confirms a little)."""
    deadline = time.monotonic() + within
    last, since = -1, time.monotonic()
    while True:
        depth = await queue_depth(name)
        if depth >= expected or time.monotonic() > deadline:
            return depth
        if depth != last:
            last, since = depth, time.monotonic()
        elif time.monotonic() - since > 1.5:
            return depth
        await asyncio.sleep(0.2)


async def delete_topology(prefix: str, extra_queues: tuple[str, ...] = ()) -> None:
    topology = Topology(prefix)
    delays = {*(max(1, int(s * 1000)) for s in (*Settings().retry_delays, *DELAY_TIERS))}
    queues = [topology.work_queue, topology.dead_queue, *extra_queues]
    queues += [topology.delay_queue(ms) for ms in sorted(delays)]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except ChannelClosed:
                channel = await connection.channel()
        for exchange in (topology.exchange, topology.dead_exchange, *extra_queues):
            try:
                await channel.exchange_delete(exchange)
            except ChannelClosed:
                channel = await connection.channel()
    finally:
        await connection.close()


async def delete_redis_keys(prefix: str) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        deleted = 0
        for i in range(0, len(keys), 1000):
            deleted += int(await client.delete(*keys[i : i + 1000]))
        return deleted
    finally:
        await client.aclose()


async def cleanup(prefix: str, extra_queues: tuple[str, ...] = ()) -> None:
    """Delete what a scenario made; never raise."""
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await delete_topology(prefix, extra_queues)
            await delete_redis_keys(prefix)
    except (AMQPError, OSError, TimeoutError, aioredis.RedisError) as exc:
        log(f"could not clean up {prefix}: {type(exc).__name__}: {exc}")


# --- tools: wrk, the alternative's virtualenv, the ingress's options ---------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: apt-get install -y wrk")
    apt = ["apt-get", "install", "-y", "-q", "wrk"]
    if os.geteuid() != 0 and shutil.which("sudo"):
        apt.insert(0, "sudo")
    result = subprocess.run(apt, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        subprocess.run([*apt[:-4], "update", "-q"], capture_output=True, check=False)
        subprocess.run(apt, capture_output=True, text=True, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: could not install wrk (apt-get install -y wrk)")
    return found


def ensure_alt_venv() -> Path:
    """bench/.venv-alt with FastAPI, uvicorn and Celery (bench/alt-requirements.txt)."""
    stamp = ALT_VENV / ".installed"
    wanted = ALT_REQUIREMENTS.read_text(encoding="utf-8")
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return ALT_VENV
    log(f"installing FastAPI + uvicorn + Celery into {ALT_VENV.relative_to(REPO)}")
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or "python3"
    if not (ALT_VENV / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(ALT_VENV)], check=True)
    pip = [str(ALT_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-r", str(ALT_REQUIREMENTS)], check=True)
    stamp.write_text(wanted, encoding="utf-8")
    return ALT_VENV


def ingress_has_processes() -> bool:
    """Whether this callback-sink's ingress takes ``--processes N``."""
    try:
        out = subprocess.run(
            [CLI, "ingress", "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--processes" in out.stdout


def ingress_command(processes: int, multi: bool) -> list[str]:
    return [CLI, "ingress", "--processes", str(processes)] if multi else [CLI, "ingress"]


def rss_role(child: procs.Child) -> dict[str, float]:
    """Peak RSS of every process of a child's tree, as ``name`` or ``name[i]``."""
    peaks = [child.peak_mib[pid] for pid in sorted(child.peak_mib)]
    if len(peaks) == 1:
        return {child.name: peaks[0]}
    return {f"{child.name}[{i}]": mib for i, mib in enumerate(peaks)}


# --- the benchmark -------------------------------------------------------------------------------


class Bench:
    def __init__(self, config: Config, work: Path, wrk: str, multi: bool) -> None:
        self.config = config
        self.work = work
        self.wrk = wrk
        self.multi = multi  # the ingress takes --processes
        self.prefetch = Settings().prefetch
        self.children: list[procs.Child] = []

    # helpers

    def env(self, prefix: str, port: int, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SINK_", "ALT_"))}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(
            SINK_SECRETS=SECRET,
            SINK_AMQP_URL=AMQP_URL,
            SINK_TOPOLOGY_PREFIX=prefix,
            SINK_HOST="127.0.0.1",
            SINK_PORT=str(port),
            SINK_SPOOL_DIR=str(self.work / prefix / "spool"),
            SINK_HANDLERS="bench.counting_handler",
            SINK_LOG_LEVEL="info",
        )
        env.update(extra)
        return env

    async def start(self, name: str, command: list[str], env: dict[str, str]) -> procs.Child:
        child = await procs.start(name, command, env, REPO, self.work / "logs")
        self.children.append(child)
        return child

    async def stop(self, child: procs.Child) -> None:
        status = await child.stop()
        if status not in (0, -signal.SIGTERM):
            log(f"{child.name} pid {child.pid} exited with status {status}")

    async def stop_all(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(ProcessLookupError, OSError):
                await child.stop()
        self.children.clear()

    async def ready(self, child: procs.Child, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                child.check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise child.failure(f"was not ready at {url} within {READY_TIMEOUT:.0f} s")

    async def consuming(self, child: procs.Child, queue: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            child.check_alive()
            if await consumers_of(queue) >= 1:
                return
            await asyncio.sleep(0.1)
        raise child.failure(f"did not consume {queue} within {READY_TIMEOUT:.0f} s")

    def body_dir(self, tag: str, count: int) -> Path:
        directory = self.work / "bodies" / tag
        bodies.write_for_wrk(directory, bodies.build(count, SECRET, tag), WRK_THREADS)
        return directory

    def bodies_for(self, seconds: float) -> int:
        """Enough distinct callbacks for ``seconds`` of wrk at up to 8,000/s."""
        if self.config.limit:  # each thread may send a few past its limit: no wrap-around
            return (self.config.limit + self.config.connections) * WRK_THREADS
        return int(8000 * seconds)

    async def run_wrk(
        self, url: str, directory: Path, seconds: float, limit: int = 0
    ) -> dict[str, Any]:
        command = [
            self.wrk,
            "-t",
            str(WRK_THREADS),
            "-c",
            str(self.config.connections),
            "-d",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "post.lua"),
            url,
            "--",
            str(directory),
            str(limit),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = await procs.start("wrk", command, os.environ, REPO, self.work / "logs")
        await child.wait(seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        for line in child.stdout.read_text(encoding="utf-8").splitlines():
            if line.startswith("bench-wrk "):
                summary: dict[str, Any] = orjson.loads(line.removeprefix("bench-wrk "))
                break
        else:
            raise child.failure("printed no summary")
        wall = summary["duration_us"] / 1e6
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary["ok"] = int(summary["statuses"].get("200", 0))
        summary["non_200"] = summary["requests"] - summary["ok"] + sum(summary["errors"].values())
        summary["rate"] = summary["ok"] / wall
        summary["cpu_percent"] = 100 * cpu / wall
        return summary

    def wrk_label(self, summary: dict[str, Any]) -> str:
        return f"wrk {WRK_THREADS}t/{self.config.connections}c ({summary['cpu_percent']:.0f} % CPU)"

    async def http_row(
        self,
        child: procs.Child,
        base: str,
        tag: str,
        queue: str | None,
        extra_rss: Callable[[], dict[str, float]] | None = None,
    ) -> Result:
        """Warm-up, then the measured wrk run, against a ready server; ``queue``: the queue
        its 200s end up in (checked for losses once the server stopped)."""
        config = self.config
        url = f"{base}/callbacks"
        warm_dir = self.body_dir(f"{tag}-warm", self.bodies_for(config.warmup))
        run_dir = self.body_dir(tag, self.bodies_for(config.duration))
        accepted, non_200 = 0, 0
        if config.warmup and not config.limit:
            warm = await self.run_wrk(url, warm_dir, config.warmup)
            accepted, non_200 = warm["ok"], warm["non_200"]
        cpu_before, at = child.cpu(), time.monotonic()
        summary = await self.run_wrk(url, run_dir, config.duration, config.limit)
        server_cpu = 100 * (child.cpu() - cpu_before) / (time.monotonic() - at)
        accepted += summary["ok"]
        non_200 += summary["non_200"]
        rss = {}
        child.sample()
        await self.stop(child)
        rss = rss_role(child)
        lost = None
        extra: dict[str, Any] = {"wrk": summary, "server_cpu_percent": server_cpu}
        if queue is not None:
            depth = await settled_depth(queue, accepted)
            lost = max(0, accepted - depth)
            extra.update(accepted=accepted, queue_depth=depth)
        lat = summary["latency_us"]
        return Result(
            value=summary["rate"],
            generator=self.wrk_label(summary),
            non_200=non_200,
            lost=lost,
            p50_ms=lat["p50"] / 1000,
            p99_ms=lat["p99"] / 1000,
            peak_rss_mib=rss,
            extra=extra,
        )

    # scenarios

    async def noop(self) -> Result:
        port = procs.free_port()
        env = self.env("bench-noop", port)
        child = await self.start("noop", [PYTHON, str(BENCH / "noop_server.py"), str(port)], env)
        await self.ready(child, f"http://127.0.0.1:{port}/readyz")
        return await self.http_row(child, f"http://127.0.0.1:{port}", "noop", None)

    async def ingress(self, processes: int, level: str) -> Result:
        if processes > 1 and not self.multi:
            return Result(float("nan"), "n/a: this ingress has no --processes")
        prefix = new_prefix()
        port = procs.free_port()
        env = self.env(prefix, port, SINK_LOG_LEVEL=level)
        try:
            child = await self.start("ingress", ingress_command(processes, self.multi), env)
            base = f"http://127.0.0.1:{port}"
            await self.ready(child, f"{base}/readyz")
            result = await self.http_row(child, base, prefix, Topology(prefix).work_queue)
            result.extra["processes"] = processes
            result.extra["log_level"] = level
            return result
        finally:
            await cleanup(prefix)

    async def celery(self, confirm: bool) -> Result:
        venv = ensure_alt_venv()
        prefix = new_prefix()
        queue = f"{prefix}.celery"
        port = procs.free_port()
        env = self.env(prefix, port)
        env.update(
            ALT_SECRET=SECRET,
            ALT_BROKER=AMQP_URL,
            ALT_QUEUE=queue,
            ALT_CONFIRM="1" if confirm else "0",
        )
        command = [
            str(venv / "bin" / "uvicorn"),
            "alt_app:app",
            "--app-dir",
            str(BENCH),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
        ]
        try:
            child = await self.start("uvicorn", command, env)
            base = f"http://127.0.0.1:{port}"
            await self.ready(child, f"{base}/readyz")
            return await self.http_row(child, base, prefix, queue)
        finally:
            await cleanup(prefix, (queue,))

    async def bare_publish(self, processes: int) -> Result:
        config = self.config
        prefix = new_prefix()
        seconds = 1.0 if config.limit else config.duration
        warmup = 0.3 if config.limit else config.warmup
        per = max(1, config.connections // processes)
        try:
            # Declare first, so that the publishers do not race to declare the same queue.
            await self.bare(["fill", "--prefix", prefix, "--count", "1", "--concurrency", "1"])
            await asyncio.sleep(0)
            runs = await asyncio.gather(
                *(
                    self.bare(
                        [
                            "publish",
                            "--prefix",
                            prefix,
                            "--tag",
                            f"p{i}",
                            "--concurrency",
                            str(per),
                            "--duration",
                            str(seconds),
                            "--warmup",
                            str(warmup),
                            "--bodies",
                            str(min(20000, int(6000 * (seconds + warmup)))),
                        ]
                    )
                    for i in range(processes)
                )
            )
            total = 1 + sum(int(run["total"]) for run in runs)
            depth = await settled_depth(Topology(prefix).work_queue, total)
            return Result(
                value=sum(float(run["rate"]) for run in runs),
                generator=f"itself: {processes}×{per} confirms in flight ({runs[0]['loop']})",
                non_200=sum(int(run["refused"]) for run in runs),
                lost=max(0, total - depth),
                peak_rss_mib={
                    f"publisher[{i}]": float(run["peak_rss_mib"]) for i, run in enumerate(runs)
                },
                extra={"runs": runs, "queue_depth": depth, "confirmed_total": total},
            )
        finally:
            await cleanup(prefix)

    async def bare(self, arguments: list[str]) -> dict[str, Any]:
        env = self.env("bench-bare", 8080)
        child = await self.start("bare", [PYTHON, str(BENCH / "bare.py"), *arguments], env)
        status = await child.wait(DRAIN_TIMEOUT)
        if status != 0:
            raise child.failure(f"exited with status {status}")
        result: dict[str, Any] = orjson.loads(child.stdout.read_bytes().splitlines()[-1])
        return result

    async def fill(self, prefix: str) -> int:
        count = self.config.drain_count
        await self.bare(["fill", "--prefix", prefix, "--count", str(count), "--concurrency", "256"])
        depth = await settled_depth(Topology(prefix).work_queue, count)
        if depth != count:
            log(f"{prefix}: filled {depth} of {count}")
        return depth

    async def bare_consume(self, setnx: bool) -> Result:
        prefix = new_prefix()
        try:
            count = await self.fill(prefix)
            arguments = ["consume", "--prefix", prefix, "--count", str(count)]
            arguments += ["--prefetch", str(self.prefetch)]
            if setnx:
                arguments += ["--redis", REDIS_URL]
            run = await self.bare(arguments)
            left = await queue_depth(Topology(prefix).work_queue)
            return Result(
                value=float(run["rate"]),
                generator=f"pre-filled queue, {count:,} messages",
                lost=count - int(run["consumed"]) + left,
                twice=int(run["consumed"]) - int(run["distinct"]),
                peak_rss_mib={"consumer": float(run["peak_rss_mib"])},
                extra={"run": run, "prefetch": self.prefetch, "left": left},
            )
        finally:
            await cleanup(prefix)

    async def drain(self, dedup: str) -> Result:
        prefix = new_prefix()
        try:
            count = await self.fill(prefix)
            dedup_url = REDIS_URL if dedup == "redis" else "memory://"
            env = self.env(prefix, procs.free_port(), SINK_DEDUP_URL=dedup_url)
            worker = await self.start("worker", [CLI, "worker"], env)
            handled = procs.Handled(worker.stderr)
            await handled.wait_for(count, worker, DRAIN_TIMEOUT, idle=15.0)
            worker.sample()
            await self.stop(worker)
            handled.poll()
            topology = Topology(prefix)
            left = await queue_depth(topology.work_queue) + await queue_depth(topology.dead_queue)
            span = handled.times[-1] - handled.times[0] if handled.count > 1 else 0.0
            return Result(
                value=(handled.count - 1) / max(span, 1e-9),
                generator=f"pre-filled queue, {count:,} messages",
                lost=count - len(handled.keys),
                twice=handled.twice,
                peak_rss_mib=rss_role(worker),
                extra={"handled": handled.count, "left_in_queues": left, "dedup": dedup},
            )
        finally:
            await cleanup(prefix)

    async def e2e(self) -> Result:
        config = self.config
        processes = 2 if self.multi else 1
        prefix = new_prefix()
        port = procs.free_port()
        base = f"http://127.0.0.1:{port}"
        env = self.env(prefix, port, SINK_DEDUP_URL=REDIS_URL)
        topology = Topology(prefix)
        try:
            ingress = await self.start("ingress", ingress_command(processes, self.multi), env)
            worker = await self.start("worker", [CLI, "worker"], env)
            await self.ready(ingress, f"{base}/readyz")
            await self.consuming(worker, topology.work_queue)
            handled = procs.Handled(worker.stderr)
            url = f"{base}/callbacks"
            accepted, non_200 = 0, 0
            if not config.limit:
                warm = await self.run_wrk(url, self.body_dir(f"{prefix}-warm", 4000), config.warmup)
                accepted, non_200 = warm["ok"], warm["non_200"]
                await handled.wait_for(accepted, worker, DRAIN_TIMEOUT, idle=10.0)
            # 1. the maximum: closed loop, then until the worker handled every one
            run_dir = self.body_dir(f"{prefix}-max", self.bodies_for(config.duration))
            started = time.monotonic()
            summary = await self.run_wrk(url, run_dir, config.duration, config.limit)
            accepted += summary["ok"]
            non_200 += summary["non_200"]
            await handled.wait_for(accepted, worker, DRAIN_TIMEOUT, idle=10.0)
            max_rate = summary["ok"] / max(handled.times[-1] - started, 1e-9)
            log(f"e2e: maximum {max_rate:,.0f} callbacks/s (ingress alone {summary['rate']:,.0f})")
            # 2. open loop at fractions of it
            levels: dict[str, Any] = {}
            for fraction in config.levels:
                rate = max(10.0, fraction * max_rate)
                count = 100 if config.limit else int(rate * config.level_seconds)
                tag = f"{prefix}-l{int(fraction * 100)}"
                out = self.work / f"{tag}.json"
                sender = await self.start(
                    "openloop",
                    [
                        *(PYTHON, str(BENCH / "openloop.py"), "--url", url),
                        *("--rate", f"{rate:.1f}", "--count", str(count)),
                        *("--tag", tag, "--out", str(out)),
                    ],
                    env,
                )
                await sender.wait(config.level_seconds + DRAIN_TIMEOUT)
                run = orjson.loads(out.read_bytes())
                ok = sum(1 for s in run["status"] if s == 200)
                accepted += ok
                non_200 += count - ok
                await handled.wait_for(accepted, worker, DRAIN_TIMEOUT, idle=10.0)
                levels[f"{fraction:.0%}"] = latency_level(run, handled, rate)
            ingress.sample()
            worker.sample()
            await self.stop(ingress)
            await handled.wait_for(accepted, worker, 10.0, idle=3.0)
            await self.stop(worker)
            handled.poll()
            rss = rss_role(ingress) | rss_role(worker)
            return Result(
                value=max_rate,
                generator=f"wrk {WRK_THREADS}t/{config.connections}c, then open loop (Python)",
                non_200=non_200,
                lost=max(0, accepted - len(handled.keys)),
                twice=handled.twice,
                peak_rss_mib=rss,
                extra={"levels": levels, "max_wrk": summary, "ingress_processes": processes},
            )
        finally:
            await cleanup(prefix)


def latency_level(run: dict[str, Any], handled: procs.Handled, rate: float) -> dict[str, Any]:
    """End-to-end latency of one open-loop level: handler done minus POST due, per callback."""
    done: dict[str, float] = {}
    for call_id, at in zip(handled.call_ids, handled.times, strict=True):
        done.setdefault(call_id, at)
    e2e = sorted(
        (done[c] - due) * 1000
        for c, due, s in zip(run["call_ids"], run["due"], run["status"], strict=True)
        if s == 200 and c in done
    )
    answers = sorted(a for a, s in zip(run["answer_ms"], run["status"], strict=True) if s == 200)
    lags = sorted(run["send_lag_ms"])
    return {
        "target_rate": rate,
        "sent_rate": len(run["due"]) / max(run["send_seconds"], 1e-9),
        "count": len(run["due"]),
        "e2e_ms": {"p50": pct(e2e, 50), "p99": pct(e2e, 99), "max": e2e[-1] if e2e else None},
        "answer_ms": {"p50": pct(answers, 50), "p99": pct(answers, 99)},
        "send_lag_ms": {"p50": pct(lags, 50), "p99": pct(lags, 99)},
        "sender_cpu_percent": 100 * run["cpu_seconds"] / max(run["wall_seconds"], 1e-9),
    }


def pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


# --- rounds and the table ------------------------------------------------------------------------


def scenarios(bench: Bench, config: Config) -> dict[str, Callable[[], Awaitable[Result]]]:
    table: dict[str, Callable[[], Awaitable[Result]]] = {
        "noop": bench.noop,
        "bare-pub-1p": lambda: bench.bare_publish(1),
        "bare-pub-2p": lambda: bench.bare_publish(2),
        "ingress-1p-info": lambda: bench.ingress(1, "info"),
        "ingress-1p-warning": lambda: bench.ingress(1, "warning"),
        "ingress-2p-info": lambda: bench.ingress(2, "info"),
        "celery": lambda: bench.celery(False),
        "celery-confirm": lambda: bench.celery(True),
        "bare-consume": lambda: bench.bare_consume(False),
        "bare-consume-setnx": lambda: bench.bare_consume(True),
        "drain-memory": lambda: bench.drain("memory"),
        "drain-redis": lambda: bench.drain("redis"),
        "e2e": bench.e2e,
    }
    if not config.alt:
        del table["celery"], table["celery-confirm"]
    if config.only:
        table = {name: run for name, run in table.items() if name in config.only}
    return table


async def run_rounds(bench: Bench, config: Config) -> dict[str, list[Result]]:
    table = scenarios(bench, config)
    names = list(table)
    results: dict[str, list[Result]] = {name: [] for name in names}
    step = max(1, len(names) // max(config.rounds, 1))
    for r in range(config.rounds):
        order = names[(r * step) % len(names) :] + names[: (r * step) % len(names)]
        for name in order:
            started = time.monotonic()
            window = procs.CpuWindow.begin()
            try:
                result = await table[name]()
            except (procs.ChildFailed, TimeoutError, AMQPError, aiohttp.ClientError) as exc:
                log(f"round {r + 1} {name} FAILED: {type(exc).__name__}: {exc}")
                result = Result(float("nan"), "FAILED", extra={"failed": str(exc)})
            finally:
                await bench.stop_all()
            result.extra["cpu_percent"] = window.end()
            results[name].append(result)
            log(
                f"round {r + 1}/{config.rounds} {name}: {result.value:,.0f} "
                f"({time.monotonic() - started:.0f} s; non-200 {result.non_200}, lost "
                f"{result.lost}, twice {result.twice}; other CPU "
                f"{result.extra['cpu_percent']['other']:.0f} %)"
            )
    return results


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}" if abs(value) < 10 else f"{value:.1f}{unit}"


ROWS = [
    ("noop", "aiohttp no-op handler (HTTP ceiling)", "req/s"),
    ("bare-pub-1p", "bare aio-pika confirmed publisher, 1 process", "msg/s"),
    ("bare-pub-2p", "bare aio-pika confirmed publisher, 2 processes", "msg/s"),
    ("ingress-1p-info", "callback-sink ingress, 1 process, info logs", "req/s"),
    ("ingress-1p-warning", "callback-sink ingress, 1 process, warning logs", "req/s"),
    ("ingress-2p-info", "callback-sink ingress, 2 processes, info logs", "req/s"),
    ("celery", "FastAPI + Celery .delay(), 2 uvicorn workers, no confirms", "req/s"),
    ("celery-confirm", "FastAPI + Celery .delay(), 2 uvicorn workers, confirm_publish", "req/s"),
    ("bare-consume", "bare consume + ack", "msg/s"),
    ("bare-consume-setnx", "bare consume + ack + Redis SET NX", "msg/s"),
    ("drain-memory", "callback-sink worker drain, memory dedup", "cb/s"),
    ("drain-redis", "callback-sink worker drain, Redis dedup", "cb/s"),
    ("e2e", "end to end max: ingress + worker (Redis dedup)", "cb/s"),
]


def ratio(results: dict[str, list[Result]], a: str, b: str) -> list[float]:
    """Per-round ratios a/b (rounds where both ran)."""
    pairs = zip(results.get(a, []), results.get(b, []), strict=False)
    return [x.value / y.value for x, y in pairs if y.value and x.value == x.value]


def summarize(results: dict[str, list[Result]], config: Config) -> tuple[str, dict[str, Any]]:
    """The one table, and its figures for the JSON file."""
    lines = [
        "| # | what | generator | median | range | p50 / p99 ms | target | verdict "
        "| non-200 | lost | twice | peak RSS MiB | other CPU % |",
        "|--:|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    summary: dict[str, Any] = {"rows": {}, "ratios": {}}
    n = 0

    def counts(rs: list[Result]) -> tuple[str, str, str]:
        def total(attr: str) -> str:
            values = [getattr(r, attr) for r in rs if getattr(r, attr) is not None]
            return str(sum(values)) if values else "–"

        return total("non_200"), total("lost"), total("twice")

    for key, label, unit in ROWS:
        rs = results.get(key)
        if not rs:
            continue
        n += 1
        values = [r.value for r in rs]
        med = median(values)
        finite = [v for v in values if v == v]
        spread = f"{fmt(min(finite))}–{fmt(max(finite))}" if len(finite) > 1 else ""
        lat = ""
        if rs[0].p50_ms is not None:
            lat = f"{median([r.p50_ms or 0 for r in rs]):.1f} / {median([r.p99_ms or 0 for r in rs]):.1f}"  # noqa: E501
        rss = max((mib for r in rs for mib in r.peak_rss_mib.values()), default=0.0)
        non_200, lost, twice = counts(rs)
        other = median([r.extra.get("cpu_percent", {}).get("other", float("nan")) for r in rs])
        lines.append(
            f"| {n} | {label} | {rs[0].generator} | {fmt(med, ' ' + unit)} | {spread} | {lat} "
            f"| | | {non_200} | {lost} | {twice} | {rss:.0f} | {other:.0f} |"
        )
        summary["rows"][key] = {"label": label, "unit": unit, "median": med, "values": values}
        if key == "e2e":
            for level in config.levels:
                name = f"{level:.0%}"
                lv = [r.extra["levels"][name] for r in rs if name in r.extra.get("levels", {})]
                p50 = median([v["e2e_ms"]["p50"] or float("nan") for v in lv])
                p99 = median([v["e2e_ms"]["p99"] or float("nan") for v in lv])
                sent = median([v["sent_rate"] for v in lv])
                lag = median([v["send_lag_ms"]["p99"] or 0 for v in lv])
                cpu = median([v["sender_cpu_percent"] for v in lv])
                n += 1
                lines.append(
                    f"| {n} | end to end at {name} of max | open loop, Python (lag p99 "
                    f"{lag:.1f} ms, {cpu:.0f} % CPU) | {fmt(sent, ' cb/s')} | | "
                    f"{p50:.1f} / {p99:.1f} | | | | | | | |"
                )
                summary["rows"][f"e2e-{name}"] = {"sent_rate": sent, "p50_ms": p50, "p99_ms": p99}

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("PASS" if ok else "MISS")

    checks: list[tuple[str, str, list[float], str, Callable[[float], bool]]] = [
        (
            "ingress 1p / bare publisher 1p",
            "r",
            ratio(results, "ingress-1p-info", "bare-pub-1p"),
            "≥ 0.6",
            lambda v: v >= 0.6,
        ),
        (
            "ingress 2p / bare publisher 2p",
            "r",
            ratio(results, "ingress-2p-info", "bare-pub-2p"),
            "≥ 0.8",
            lambda v: v >= 0.8,
        ),
        (
            "ingress 2p / FastAPI+Celery, no confirms",
            "r",
            ratio(results, "ingress-2p-info", "celery"),
            "≥ 2",
            lambda v: v >= 2,
        ),
        (
            "ingress 2p / FastAPI+Celery, confirm_publish",
            "r",
            ratio(results, "ingress-2p-info", "celery-confirm"),
            "≥ 5",
            lambda v: v >= 5,
        ),
        (
            "info-log cost: 1 − info / warning (1 process)",
            "%",
            [1 - x for x in ratio(results, "ingress-1p-info", "ingress-1p-warning")],
            "≤ 10 %",
            lambda v: v <= 0.10,
        ),
        (
            "worker drain Redis / bare consume + SET NX",
            "r",
            ratio(results, "drain-redis", "bare-consume-setnx"),
            "≥ 0.8",
            lambda v: v >= 0.8,
        ),
        (
            "worker drain memory / bare consume",
            "r",
            ratio(results, "drain-memory", "bare-consume"),
            "≥ 0.9",
            lambda v: v >= 0.9,
        ),
    ]
    for label, kind, values, target, ok in checks:
        med = median(values)
        known = med == med
        shown = "n/a" if not known else (f"{med:.1%}" if kind == "%" else f"{med:.2f}×")
        spread = ""
        if len(values) > 1:
            spread = (
                f"{min(values):.1%}–{max(values):.1%}"
                if kind == "%"
                else f"{min(values):.2f}–{max(values):.2f}"
            )
        n += 1
        lines.append(
            f"| {n} | {label} | same round | {shown} | {spread} | | {target} "
            f"| {verdict(ok(med) if known else None)} | | | | | |"
        )
        summary["ratios"][label] = {"median": med, "values": values, "target": target}
    p99_50 = summary["rows"].get("e2e-50%", {}).get("p99_ms")
    n += 1
    lines.append(
        f"| {n} | end-to-end p99 at 50 % of max | open loop | {fmt(p99_50, ' ms')} | | | < 50 ms "
        f"| {verdict(None if p99_50 is None or p99_50 != p99_50 else p99_50 < 50)} | | | | | |"
    )
    sink_rss = [
        mib for key in SINK_ROWS for r in results.get(key, []) for mib in r.peak_rss_mib.values()
    ]
    top = max(sink_rss, default=float("nan"))
    n += 1
    lines.append(
        f"| {n} | peak RSS of any callback-sink process | VmHWM | {fmt(top * 2**20 / 1e6, ' MB')} "
        f"| | | < 150 MB | {verdict(None if top != top else top < RSS_TARGET_MIB)} | | | | | |"
    )
    clean = all_clean(results)
    n += 1
    lines.append(
        f"| {n} | every run: non-200, lost, twice | counted | "
        f"{'all 0' if clean else 'NOT all 0'} | | | 0 / 0 / 0 | {verdict(clean)} | | | | | |"
    )
    summary["peak_rss_mib_sink"] = top
    summary["e2e_p99_at_50"] = p99_50
    summary["clean"] = clean
    return "\n".join(lines), summary


def all_clean(results: dict[str, list[Result]]) -> bool:
    return all(
        not r.non_200 and not r.lost and not r.twice and "failed" not in r.extra
        for rs in results.values()
        for r in rs
    )


async def describe() -> dict[str, Any]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        assert connection.transport is not None
        version = connection.transport.connection.server_properties.get("version", "?")
        rabbit = version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        redis_version = (await client.info("server")).get("redis_version", "?")
    finally:
        await client.aclose()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)  # noqa: ASYNC221
    settings = Settings()
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "rabbitmq": rabbit,
        "redis": redis_version,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "?",
        "loop_available": loop,
        "worker_prefetch": settings.prefetch,
        "worker_concurrency": settings.concurrency,
        "load_before": os.getloadavg(),
    }


async def main(args: argparse.Namespace, config: Config) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    wrk = ensure_wrk()
    if config.alt:
        ensure_alt_venv()
    multi = ingress_has_processes()
    if not multi:
        log("this callback-sink ingress has no --processes: 2-process rows are n/a")
    machine = await describe()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="callback-sink-bench-") as tmp:
        bench = Bench(config, Path(tmp), wrk, multi)
        try:
            results = await run_rounds(bench, config)
        finally:
            await bench.stop_all()
    elapsed = time.monotonic() - started
    table, summary = summarize(results, config)
    mode = "quick" if args.quick else "full"
    header = (
        f"callback-sink bench ({mode}): {config.rounds} interleaved round(s), medians; "
        f"{machine['cpus']} CPUs, Python {machine['python']}, RabbitMQ {machine['rabbitmq']}, "
        f"Redis {machine['redis']}, {machine['wrk']}; loop {machine['loop_available']}; "
        f"{config.duration:g} s per throughput row, {config.connections} connections; "
        f"ingress --processes {'yes' if multi else 'no'}; {elapsed:.0f} s in all"
    )
    print(header)
    print()
    print(table)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"bench-{mode}-{stamp}.json"
    path.write_bytes(
        orjson.dumps(
            {
                "mode": mode,
                "config": asdict(config),
                "machine": machine,
                "load_after": os.getloadavg(),
                "seconds": elapsed,
                "ingress_processes_option": multi,
                "summary": summary,
                "table": table,
                "results": {k: [asdict(r) for r in v] for k, v in results.items()},
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print()
    print(f"JSON: {path}")
    return 0 if summary["clean"] else 1


def parse_args() -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few hundred callbacks, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="s per throughput row")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain-count", type=int, default=10000)
    parser.add_argument("--no-alt", action="store_true", help="skip FastAPI + Celery")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args()
    if args.quick:
        config = Config(
            rounds=1,
            duration=2.0,
            warmup=0.0,
            connections=16,
            drain_count=300,
            level_seconds=2.0,
            levels=(0.25, 0.5, 0.75),
            limit=150,
            alt=False,
        )
    else:
        config = Config(
            rounds=args.rounds,
            duration=args.duration,
            warmup=1.0,
            connections=args.connections,
            drain_count=args.drain_count,
            level_seconds=args.duration,
            levels=(0.25, 0.5, 0.75),
            limit=0,
            alt=not args.no_alt,
        )
    config.only = [name for name in args.only.split(",") if name]
    return args, config


if __name__ == "__main__":
    arguments, configuration = parse_args()
    try:
        sys.exit(asyncio.run(main(arguments, configuration)))
    except procs.ChildFailed as exc:
        log(f"FAILED: {exc}")
        sys.exit(2)
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted; children stopped")
        sys.exit(130)
    except (AMQPError, OSError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc} (are RabbitMQ and Redis up? make services)")
        sys.exit(2)
