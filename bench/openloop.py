"""Open-loop load at a fixed rate, for end-to-end latency: the N-th callback is due at
``start + N / rate`` whether or not earlier ones were answered (no coordinated omission),
and its latency is counted from that due time. Run as a child process by ``bench.py``.

Why not wrk: Debian has no wrk2, and wrk's Lua ``delay()`` only paces each connection after
its previous answer (closed loop), which hides queueing. At 25-75 % of the end-to-end
maximum (hundreds to a few thousand requests/s) one aiohttp client keeps up; it reports how
late it actually sent (``send_lag_ms``) and its own CPU share, so the benchmark can show
it was not the bottleneck. It collects no garbage while it sends (``gc.disable``): its own
pauses would show as latency.

Writes a JSON file: per callback its callId, due time (``time.monotonic()``), status and
answer latency; plus the send lag and CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

import aiohttp  # noqa: E402
import bodies  # noqa: E402
import orjson  # noqa: E402

HEADERS = {"Content-Type": "application/json"}


async def run(args: argparse.Namespace) -> dict[str, object]:
    payloads = bodies.build(args.count, args.secret, args.tag)
    due = [0.0] * args.count
    status = [0] * args.count
    answer_ms = [0.0] * args.count
    lag_ms = [0.0] * args.count
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> None:
            lag_ms[i] = (time.monotonic() - due[i]) * 1000
            try:
                async with session.post(args.url, data=payloads[i], headers=HEADERS) as resp:
                    await resp.read()
                    status[i] = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status[i] = -1
            answer_ms[i] = (time.monotonic() - due[i]) * 1000

        tasks = []
        # No collection while measuring: a full one paused this process for 15-40 ms, and every
        # answer that came in meanwhile was timed that much late (the tail of the row was the
        # generator's). A few seconds of garbage fit in memory.
        gc.collect()
        gc.freeze()
        gc.disable()
        cpu_before = time.process_time()
        start = time.monotonic() + 0.2
        interval = 1.0 / args.rate
        for i in range(args.count):
            due[i] = start + i * interval
            delay = due[i] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        sent_at = time.monotonic()
        await asyncio.gather(*tasks)
        cpu = time.process_time() - cpu_before
        gc.enable()
    return {
        "call_ids": [f"{args.tag}-{i}" for i in range(args.count)],
        "due": due,
        "status": status,
        "answer_ms": answer_ms,
        "send_lag_ms": lag_ms,
        "send_seconds": sent_at - start,
        "cpu_seconds": cpu,
        "wall_seconds": time.monotonic() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="callbacks per second")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--tag", required=True, help="callIds are TAG-0, TAG-1, ...")
    parser.add_argument("--secret", default="bench-secret")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    Path(args.out).write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
