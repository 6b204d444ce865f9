"""The benchmark's harness: the environment and life of its child processes, the load
generators (wrk, the bare aio-pika tool) and one measured HTTP row; the scenarios build on it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import bodies
import orjson
import procs
from common import (
    AMQP_URL,
    BENCH,
    DRAIN_TIMEOUT,
    MAX_RATE,
    PYTHON,
    READY_TIMEOUT,
    REPO,
    SECRET,
    WRK_THREADS,
    Config,
    Result,
    log,
)
from services import consumers_of, queue_depth, settled_depth

from callback_sink.sink.settings import Settings
from callback_sink.sink.topology import Topology


def rss_role(child: procs.Child) -> dict[str, float]:
    """Peak RSS of every process of a child's tree, as ``name`` or ``name[i]``."""
    peaks = [child.peak_mib[pid] for pid in sorted(child.peak_mib)]
    if len(peaks) == 1:
        return {child.name: peaks[0]}
    return {f"{child.name}[{i}]": mib for i, mib in enumerate(peaks)}


class Harness:
    def __init__(self, config: Config, work: Path, wrk: str, multi: bool) -> None:
        self.config = config
        self.work = work
        self.wrk = wrk
        self.multi = multi  # the ingress takes --processes
        self.prefetch = Settings().prefetch
        self.children: list[procs.Child] = []

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
            SINK_DRAIN_DELAY="0",
            SINK_WORKER_PORT="0",  # several workers on this host
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

    def distinct(self, summary: dict[str, Any], child: procs.Child) -> None:
        """Fail a row whose wrk ran out of distinct bodies and re-sent callIds: they are
        answered 200 and stored once, which would read as lost callbacks."""
        if summary["wrapped"]:
            raise child.failure(f"wrk re-sent callIds ({summary['wrapped']}): raise MAX_RATE")

    def bodies_for(self, seconds: float) -> int:
        """Enough distinct callbacks for ``seconds`` of wrk at up to :data:`MAX_RATE`, plus a
        second (wrk's threads do not split the load evenly, nor stop on the dot)."""
        if self.config.limit:  # each thread may send a few past its limit: no wrap-around
            return (self.config.limit + self.config.connections) * WRK_THREADS
        return int(MAX_RATE * (seconds + 1))

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
        accepted, non_200, wrapped = 0, 0, 0
        if config.warmup and not config.limit:
            warm = await self.run_wrk(url, warm_dir, config.warmup)
            accepted, non_200, wrapped = warm["ok"], warm["non_200"], warm["wrapped"]
        cpu_before, at = child.cpu(), time.monotonic()
        summary = await self.run_wrk(url, run_dir, config.duration, config.limit)
        if queue is not None:  # re-sent callIds are stored once: no fair count
            self.distinct({"wrapped": wrapped + summary["wrapped"]}, child)
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

    async def bare(self, arguments: list[str]) -> dict[str, Any]:
        env = self.env("bench-bare", 8080)
        child = await self.start("bare", [PYTHON, str(BENCH / "bare.py"), *arguments], env)
        status = await child.wait(DRAIN_TIMEOUT)
        if status != 0:
            raise child.failure(f"exited with status {status}")
        result: dict[str, Any] = orjson.loads(child.stdout.read_bytes().splitlines()[-1])
        return result

    async def fill(self, prefix: str, partitions: int = 0) -> int:
        count = self.config.drain_count
        arguments = ["fill", "--prefix", prefix, "--count", str(count), "--concurrency", "256"]
        await self.bare([*arguments, "--partitions", str(partitions)])
        if partitions:  # every publish was confirmed; the quorum queues' counts trail a little
            await asyncio.sleep(1.5)
            queues = Topology(prefix, partitions=partitions).partition_queues
            depth = sum([await queue_depth(q) for q in queues])
        else:
            depth = await settled_depth(Topology(prefix).work_queue, count)
        if depth != count:
            log(f"{prefix}: filled {depth} of {count}")
        return depth
