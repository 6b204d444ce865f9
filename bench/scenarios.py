"""The measured rows: each scenario runs once per round and returns one :class:`Result`
(see bench/README.md for what each one measures and why)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import procs
from common import (
    AMQP_URL,
    BENCH,
    CLI,
    DRAIN_TIMEOUT,
    PARTITIONS,
    PYTHON,
    REDIS_URL,
    REFERENCE_FRACTION,
    SECRET,
    WRK_THREADS,
    Config,
    Result,
    log,
    new_prefix,
)
from harness import Harness, rss_role
from levels import reference_level, run_level
from services import cleanup, queue_depth, settled_depth
from tooling import ensure_alt_venv, ingress_command

from callback_sink.sink.topology import Topology


class Bench(Harness):
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
        """FastAPI + Celery ``.delay()`` under two uvicorn workers (access log on, as by
        default), without and with publisher confirms."""
        prefix = new_prefix()
        queue = f"{prefix}.celery"
        extra = {"ALT_CONFIRM": "1" if confirm else "0"}
        return await self.uvicorn("alt_app:app", prefix, queue, 2, extra, access_log=True)

    async def faststream(self, workers: int) -> Result:
        """FastAPI + FastStream's RabbitRouter (``faststream_app.py``): a confirmed persistent
        publish to a quorum queue per callback, under ``workers`` uvicorn workers, no logs."""
        prefix = new_prefix()
        result = await self.uvicorn("faststream_app:app", prefix, f"{prefix}.faststream", workers)
        result.extra["workers"] = workers
        return result

    async def uvicorn(
        self,
        app: str,
        prefix: str,
        queue: str,
        workers: int,
        extra: dict[str, str] | None = None,
        *,
        access_log: bool = False,
    ) -> Result:
        """One HTTP row of an alternative in ``bench/.venv-alt``: ``uvicorn app`` with uvloop
        and httptools, publishing to ``queue``, deleted afterwards with the prefix."""
        venv = ensure_alt_venv()
        port = procs.free_port()
        env = self.env(prefix, port)
        env.update(ALT_SECRET=SECRET, ALT_BROKER=AMQP_URL, ALT_QUEUE=queue, **(extra or {}))
        command = [
            *(str(venv / "bin" / "uvicorn"), app, "--app-dir", str(BENCH)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--loop", "uvloop", "--http", "httptools"),
            *(() if access_log else ("--no-access-log",)),
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

    async def drain(self, dedup: str, partitions: int = 0) -> Result:
        prefix = new_prefix()
        try:
            count = await self.fill(prefix, partitions)
            dedup_url = REDIS_URL if dedup == "redis" else "memory://"
            ordering = {"SINK_ORDERING": "group", "SINK_PARTITIONS": str(partitions)}
            env = self.env(
                prefix, procs.free_port(), SINK_DEDUP_URL=dedup_url,
                **(ordering if partitions else {}),
            )  # fmt: skip
            worker = await self.start("worker", [CLI, "worker"], env)
            handled = procs.Handled(worker.stderr)
            await handled.wait_for(count, worker, DRAIN_TIMEOUT, idle=15.0)
            worker.sample()
            await self.stop(worker)
            handled.poll()
            topology = Topology(prefix, partitions=partitions)
            queues = [topology.work_queue, topology.dead_queue, *topology.partition_queues]
            left = sum([await queue_depth(q) for q in queues])
            span = handled.times[-1] - handled.times[0] if handled.count > 1 else 0.0
            return Result(
                value=(handled.count - 1) / max(span, 1e-9),
                generator=f"pre-filled queue, {count:,} messages",
                lost=count - len(handled.keys),
                twice=handled.twice,
                peak_rss_mib=rss_role(worker),
                extra={
                    "handled": handled.count,
                    "left_in_queues": left,
                    "dedup": dedup,
                    "partitions": partitions,
                },
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
                warm_bodies = self.bodies_for(config.warmup)
                warm = await self.run_wrk(
                    url, self.body_dir(f"{prefix}-warm", warm_bodies), config.warmup
                )
                self.distinct(warm, ingress)
                accepted, non_200 = warm["ok"], warm["non_200"]
                await handled.wait_for(accepted, worker, DRAIN_TIMEOUT, idle=10.0)
            # 1. the maximum: closed loop, then until the worker handled every one
            run_dir = self.body_dir(f"{prefix}-max", self.bodies_for(config.duration))
            started, machine_before = time.monotonic(), procs.machine_busy_seconds()
            summary = await self.run_wrk(url, run_dir, config.duration, config.limit)
            self.distinct(summary, ingress)
            accepted += summary["ok"]
            non_200 += summary["non_200"]
            await handled.wait_for(accepted, worker, DRAIN_TIMEOUT, idle=10.0)
            max_rate = summary["ok"] / max(handled.times[-1] - started, 1e-9)
            # what a callback costs the machine (wrk included) where everything batches
            busy = procs.machine_busy_seconds() - machine_before
            summary["machine_cpu_us_per_callback"] = 1e6 * busy / max(summary["ok"], 1)
            log(f"e2e: maximum {max_rate:,.0f} callbacks/s (ingress alone {summary['rate']:,.0f})")
            # 2. open loop at fractions of it
            levels: dict[str, Any] = {}
            for fraction in config.levels:
                rate = max(10.0, fraction * max_rate)
                count = 100 if config.limit else int(rate * config.level_seconds)
                level = levels[f"{fraction:.0%}"] = await run_level(
                    self, url, rate, count, f"e2e level {fraction:.0%}", env,
                    (worker, handled), accepted,
                )  # fmt: skip
                accepted += level["ok"]
                non_200 += count - level["ok"]
            ingress.sample()
            worker.sample()
            await self.stop(ingress)
            await handled.wait_for(accepted, worker, 10.0, idle=3.0)
            await self.stop(worker)
            handled.poll()
            rss = rss_role(ingress) | rss_role(worker)
            # the bare reference at the 50 % level's rate, the sink stopped (levels.py)
            rate = max(10.0, REFERENCE_FRACTION * max_rate)
            count = 100 if config.limit else int(rate * config.level_seconds)
            reference = await reference_level(self, rate, count)
            return Result(
                value=max_rate,
                generator=f"wrk {WRK_THREADS}t/{config.connections}c, then open loop (Python)",
                non_200=non_200,
                lost=max(0, accepted - len(handled.keys)),
                twice=handled.twice,
                peak_rss_mib=rss,
                extra={
                    "levels": levels,
                    "reference": reference,
                    "max_wrk": summary,
                    "ingress_processes": processes,
                },
            )
        finally:
            await cleanup(prefix)


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
        "faststream-1w": lambda: bench.faststream(1),
        "faststream-2w": lambda: bench.faststream(2),
        "bare-consume": lambda: bench.bare_consume(False),
        "bare-consume-setnx": lambda: bench.bare_consume(True),
        "drain-memory": lambda: bench.drain("memory"),
        "drain-redis": lambda: bench.drain("redis"),
        "drain-ordered": lambda: bench.drain("redis", partitions=PARTITIONS),
        "e2e": bench.e2e,
    }
    if not config.alt:
        for name in ("celery", "celery-confirm", "faststream-1w", "faststream-2w"):
            del table[name]
    if config.only:
        table = {name: run for name, run in table.items() if name in config.only}
    return table
