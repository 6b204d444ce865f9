"""Bytes of log per callback: what one successful callback costs in log storage.

Runs ``callback-sink run`` (the ingress and a worker) as shipped: JSON lines at ``info``, the
default handler ``callback_sink.handlers.log``; posts ``--count`` signed callbacks (every spec
example the ingress accepts, each with its own callId), waits until the worker's
``callback_sink_worker_handled_total`` has counted them all (the last line of a callback is
written before it is counted), then divides the bytes its standard output grew by the count.
Once with ``SINK_LOG_ACCEPTED=true`` (the default) and once with ``false``. Needs RabbitMQ on
127.0.0.1; its topology is deleted afterwards. A measurement, not a test::

    .venv/bin/python bench/log_volume.py [--count 1000] [--only true|false] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from bodies import build  # noqa: E402
from common import AMQP_URL, CLI, READY_TIMEOUT, REPO, SECRET, log, new_prefix  # noqa: E402
from procs import Child, start  # noqa: E402
from services import cleanup  # noqa: E402

from callback_sink.testing.ports import free_port  # noqa: E402

#: Callbacks posted at once: enough to keep the worker busy, few enough for a laptop.
IN_FLIGHT = 16
HANDLED_TIMEOUT = 120.0
JSON = {"Content-Type": "application/json"}


async def _until(check: Any, within: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + within
    while not await check():
        child.check_alive()
        if time.monotonic() > deadline:
            raise child.failure(f"{what} within {within:.0f} s")
        await asyncio.sleep(0.1)


async def _handled(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url) as response:
            text = await response.text()
    except aiohttp.ClientError:
        return -1
    return int(sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
        if line.startswith("callback_sink_worker_handled_total{") and 'outcome="ok"' in line
    ))  # fmt: skip


async def measure(count: int, accepted: bool, workdir: Path) -> dict[str, Any]:
    """Run the sink, post ``count`` callbacks, and count what its standard output grew."""
    prefix, port, worker_port = new_prefix(), free_port(), free_port()
    env = {
        **os.environ, "SINK_LOG_FORMAT": "json", "SINK_LOG_LEVEL": "info",
        "SINK_LOG_ACCEPTED": str(accepted).lower(), "SINK_SECRETS": SECRET,
        "SINK_AMQP_URL": AMQP_URL, "SINK_TOPOLOGY_PREFIX": prefix, "SINK_PORT": str(port),
        "SINK_WORKER_PORT": str(worker_port), "SINK_SPOOL_DIR": str(workdir / prefix),
        "SINK_DRAIN_DELAY": "0",
    }  # fmt: skip
    env.pop("SINK_HANDLERS", None)  # the default: callback_sink.handlers.log
    child = await start(f"log-volume-{accepted}", [CLI, "run"], env, REPO, workdir / "logs")
    base, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{worker_port}/metrics"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"{base}/readyz") as response:
                        return response.status == 200 and await _handled(session, metrics) >= 0
                except aiohttp.ClientError:
                    return False

            await _until(ready, READY_TIMEOUT, "was not ready", child)
            await asyncio.sleep(0.5)  # start-up lines settle: they are not a callback's
            before = child.stdout.stat().st_size
            bodies = build(count, SECRET, f"{prefix}-cb")
            slots = asyncio.Semaphore(IN_FLIGHT)

            async def post(body: bytes) -> int:
                async with (
                    slots,
                    session.post(f"{base}/callbacks", data=body, headers=JSON) as response,
                ):
                    return response.status

            statuses = Counter(await asyncio.gather(*(post(b) for b in bodies)))
            if statuses != Counter({200: count}):
                raise child.failure(f"answered {dict(statuses)}")

            async def all_handled() -> bool:
                return await _handled(session, metrics) >= count

            await _until(all_handled, HANDLED_TIMEOUT, "did not handle every callback", child)
            after = child.stdout.stat().st_size  # before any shutdown line
    finally:
        await child.stop()
        await cleanup(prefix)
    window = child.stdout.read_bytes()[before:after]
    events: Counter[str] = Counter()
    for line in window.splitlines():
        try:
            events[str(orjson.loads(line).get("event"))] += len(line) + 1
        except orjson.JSONDecodeError:
            events["(not JSON)"] += len(line) + 1
    total = sum(events.values())
    return {
        "log_accepted": accepted,
        "callbacks": count,
        "bytes": total,
        "bytes_per_callback": round(total / count, 1),
        "by_event": {e: round(n / count, 1) for e, n in events.most_common()},
    }  # fmt: skip


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="callbacks per run")
    parser.add_argument("--only", choices=("true", "false"), help="one SINK_LOG_ACCEPTED value")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args(argv)
    modes = [args.only == "true"] if args.only else [True, False]
    with tempfile.TemporaryDirectory(prefix="log-volume-") as tmp:
        results = []
        for accepted in modes:
            log(f"SINK_LOG_ACCEPTED={str(accepted).lower()}: {args.count} callbacks")
            results.append(await measure(args.count, accepted, Path(tmp)))
    for result in results:
        if args.json:
            print(orjson.dumps(result).decode())
            continue
        print(f"SINK_LOG_ACCEPTED={str(result['log_accepted']).lower()}: "
              f"{result['bytes_per_callback']:.0f} bytes per callback")  # fmt: skip
        for event, size in result["by_event"].items():
            print(f"    {event:<28} {size:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
