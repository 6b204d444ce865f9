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
- ``faststream-1w`` / ``faststream-2w``: FastAPI + FastStream's RabbitRouter, a confirmed
  persistent publish to a quorum queue, under ``uvicorn --workers 1|2`` (the same virtualenv);
- ``bare-consume`` / ``bare-consume-setnx``: bare aio-pika consume + ack (+ one Redis
  ``SET NX``) of a pre-filled queue;
- ``drain-memory`` / ``drain-redis``: ``callback-sink worker`` on the same pre-filled queue;
- ``e2e``: ingress + worker (Redis dedup); the maximum end-to-end rate (wrk, closed loop),
  then open-loop load at 25, 50 and 75 % of it, latency from POST due to handler done.

Every run counts non-200 answers, callbacks lost and callbacks handled twice. This module is
the entry point (options, the rounds); the rest lives beside it: ``scenarios.py`` (the rows,
on the harness of ``harness.py``), ``ratios.py`` (targets and verdicts), ``table.py`` (the
table and the JSON file), ``services.py`` (RabbitMQ, Redis), ``tooling.py`` (wrk, the
alternative's virtualenv, the machine), ``common.py`` (settings, one result). Usage:
``.venv/bin/python bench/bench.py [--quick] [--rounds N] [--duration S]``; ``make bench``.
Exit status: 0 all counted runs clean; 1 something was refused, lost or handled twice;
2 the benchmark could not run; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import procs
from aio_pika.exceptions import AMQPError
from common import RESULTS, Config, Result, log
from scenarios import Bench, scenarios
from table import header, summarize, write_json
from tooling import describe, ensure_alt_venv, ensure_wrk, ingress_has_processes


async def run_rounds(bench: Bench, config: Config) -> dict[str, list[Result]]:
    table = scenarios(bench, config)
    names = list(table)
    results: dict[str, list[Result]] = {name: [] for name in names}
    step = max(1, len(names) // max(config.rounds, 1))
    for r in range(config.rounds):
        order = names[(r * step) % len(names) :] + names[: (r * step) % len(names)]
        for name in order:
            busy_at_start = await procs.quiet(name)  # not the previous row's leftovers
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
            result.extra["busy_cores_at_start"] = round(busy_at_start, 2)
            results[name].append(result)
            log(
                f"round {r + 1}/{config.rounds} {name}: {result.value:,.0f} "
                f"({time.monotonic() - started:.0f} s; non-200 {result.non_200}, lost "
                f"{result.lost}, twice {result.twice}; other CPU "
                f"{result.extra['cpu_percent']['other']:.0f} %)"
            )
    return results


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
    print(header(mode, config, machine, multi, elapsed))
    print()
    print(table)
    path = write_json(
        Path(args.results_dir), mode, config, machine, elapsed, multi, summary, table, results
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
    parser.add_argument("--no-alt", action="store_true", help="skip FastAPI + Celery / FastStream")
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
