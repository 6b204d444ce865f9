"""Pre-send answer times: ``POST /presend`` under open-loop load, in two rows.

- ``trivial``: a one-line ``@presend`` function at ``--rate`` requests/s (500 by default):
  p50 / p99 / max answer time, target p99 < 20 ms;
- ``over-budget``: a function that sleeps past ``SINK_PRESEND_BUDGET_MS`` (150): every answer
  must carry the default verdict and arrive within budget + 50 ms.

The ingress (the real application, with its publisher and spool: each answer's
``presend:verdict`` record is published in the background, as in production) runs in a child
process; this process sends on an open loop: request *n* is due at ``start + n / rate``
whatever the earlier ones did, and its time is counted from that due time (no coordinated
omission). Needs RabbitMQ on 127.0.0.1 (records spool to a temporary directory without it);
its topology is deleted afterwards. It is a benchmark, not a test::

    .venv/bin/python bench/presend.py [--rate 500] [--duration 10] [--budget-ms 150]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import aio_pika  # noqa: E402
import aiohttp  # noqa: E402
import orjson  # noqa: E402
from aiohttp import web  # noqa: E402

from callback_sink.sink import logs  # noqa: E402
from callback_sink.sink.presend import PresendFunc, Verdict  # noqa: E402
from callback_sink.sink.settings import Settings  # noqa: E402
from callback_sink.sink.signature import sign  # noqa: E402
from callback_sink.sink.topology import Topology, delete  # noqa: E402
from callback_sink.testing.ports import free_port  # noqa: E402

SECRET = "bench-presend-secret-0123456789"
HEADERS = {"Content-Type": "application/json"}
AMQP_URL = os.environ.get("SINK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def trivial(event: object) -> Verdict | None:
    return None


async def over_budget(event: object) -> Verdict | None:
    await asyncio.sleep(10)
    return Verdict.reject(code="too-late")


CHAINS: dict[str, tuple[PresendFunc, ...]] = {"trivial": (trivial,), "over-budget": (over_budget,)}


def serve(port: int, chain: str, settings: Settings) -> None:
    """The child: one ingress process with ``chain`` on ``port``."""
    from callback_sink.ingress.app import create_app
    from callback_sink.ingress.presend import install

    logs.configure("json", "warning")
    app = create_app(settings)
    install(app, CHAINS[chain])
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def body(now_ms: int) -> bytes:
    call_id = f"bench#presend_{uuid.uuid4()}"
    doc = {
        "callId": call_id,
        "timestamp": now_ms,
        "chat_type": "chat",
        "from": "alice",
        "to": "bob",
        "msg_id": str(uuid.uuid4().int % 10**18),
        "payload": {"type": "txt", "msg": "hello"},
        "security": sign(call_id, SECRET, now_ms),
    }
    return orjson.dumps(doc)


async def load(url: str, rate: float, duration: float) -> tuple[list[float], int, int]:
    """Open-loop load: answer times (ms, from each request's due time), non-200 answers,
    and answers that are the default (``valid`` true with no chain decision is not visible
    in the answer, so the over-budget row checks ``valid: false`` / the reject default)."""
    count = int(rate * duration)
    times: list[float] = []
    bad = rejected = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        start = time.perf_counter() + 0.2

        async def one(n: int) -> None:
            nonlocal bad, rejected
            due = start + n / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            data = body(int(time.time() * 1000))
            async with session.post(url, data=data, headers=HEADERS) as response:
                answer = orjson.loads(await response.read())
            times.append((time.perf_counter() - due) * 1000)
            bad += response.status != 200
            rejected += answer.get("valid") is False

        await asyncio.gather(*(one(n) for n in range(count)))
    return times, bad, rejected


def row(name: str, times: list[float], bad: int, extra: str) -> str:
    ordered = sorted(times)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{name:<12} n={len(ordered):>6}  p50={p50:7.2f} ms  p99={p99:7.2f} ms  "
            f"max={ordered[-1]:7.2f} ms  non-200={bad}  {extra}")  # fmt: skip


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit("the ingress did not start")


async def scenario(chain: str, args: argparse.Namespace, root: str) -> str:
    port = free_port()
    prefix = f"bench-presend-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        secrets=(SECRET,),
        amqp_url=AMQP_URL,
        topology_prefix=prefix,
        spool_dir=f"{root}/{chain}",
        presend_budget_ms=args.budget_ms,
        presend_default="reject" if chain == "over-budget" else "accept",
    )
    child = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, chain, settings), daemon=True
    )
    child.start()
    try:
        await wait_listening(port)
        await asyncio.sleep(1.0)  # the broker connection
        url = f"http://127.0.0.1:{port}{settings.presend_path}"
        rate = args.rate if chain == "trivial" else min(args.rate, 200)
        times, bad, rejected = await load(url, rate, args.duration)
    finally:
        child.terminate()
        child.join(10)
        await _delete_topology(prefix, settings)
    if chain == "trivial":
        target = "PASS" if sorted(times)[int(len(times) * 0.99)] < 20 else "MISS"
        return row(f"{chain}@{rate:g}/s", times, bad, f"target p99 < 20 ms: {target}")
    limit = args.budget_ms + 50
    late = sum(t > limit for t in times)
    verdict = "PASS" if not late and rejected == len(times) else "MISS"
    extra = f"default={rejected}/{len(times)} over {limit:g} ms={late}: {verdict}"
    return row(f"{chain}@{rate:g}/s", times, bad, extra)


async def _delete_topology(prefix: str, settings: Settings) -> None:
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception:
        return
    async with connection:
        channel = await connection.channel()
        await delete(channel, Topology(prefix), [int(d * 1000) for d in settings.retry_delays])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--budget-ms", type=float, default=150.0)
    parser.add_argument("--only", choices=sorted(CHAINS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-presend-") as root:
        for chain in [args.only] if args.only else list(CHAINS):
            print(await scenario(chain, args, root), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
