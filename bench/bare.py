"""The ceilings the benchmark compares callback-sink with: bare aio-pika loops, no sink code
on the hot path. Run as a child process by ``bench.py``; prints one JSON line on stdout.

- ``publish``: ``--concurrency`` tasks each publish a persistent message to the sink's topic
  exchange (routed to its quorum work queue; mandatory, the same properties and body the
  ingress sends) and await its publisher confirm, for ``--duration`` seconds after
  ``--warmup`` seconds. Measured: confirmed messages/s.
- ``fill``: the same, for exactly ``--count`` messages as fast as possible: a backlog of valid
  callbacks for the drain scenarios (not timed).
- ``consume``: consume ``--count`` messages from the work queue with ``--prefetch``, ack each
  one (after one Redis ``SET NX PX`` per message with ``--redis``). Measured: messages/s from
  the first delivery to the last ack.

The bare reference of the end-to-end row (:mod:`levels`), the same path as the sink's with
nothing of the sink on it; both run until stopped:

- ``serve``: an aiohttp app (one process) whose POST parses the JSON body, checks its MD5
  ``security`` and publishes it persistent and mandatory to the sink's topic exchange,
  answering 200 once the broker confirmed it; no logs, spool, limits or metrics.
- ``handle``: consume the work queue with ``--prefetch``; per message one Redis
  ``SET NX PX`` (``--redis``), then the counting handler's line on standard error
  (``bench-handled N T CALL_ID KEY``: timed where the sink's handler is, after the claim),
  then an ack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import resource
import signal
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

import aio_pika  # noqa: E402
import bodies  # noqa: E402
import orjson  # noqa: E402
from procs import HANDLED  # noqa: E402

from callback_sink.sink import headers  # noqa: E402
from callback_sink.sink.events import decode  # noqa: E402
from callback_sink.sink.partition import PARTITION_HEADER, partition_of  # noqa: E402
from callback_sink.sink.topology import Topology, declare  # noqa: E402

SECRET = "bench-secret"


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


async def _connect(
    url: str, prefix: str, partitions: int = 0
) -> tuple[aio_pika.abc.AbstractConnection, object]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    await declare(channel, Topology(prefix, partitions=partitions))
    exchange = await channel.get_exchange(prefix, ensure=False)
    return connection, exchange


async def publish(args: argparse.Namespace) -> dict[str, object]:
    messages = bodies.build_messages(args.bodies, SECRET, f"{args.prefix}-{args.tag}")
    if args.partitions:
        messages = [spread(m, i) for i, m in enumerate(messages)]
    connection, exchange = await _connect(args.url, args.prefix, args.partitions)
    counts = {"confirmed": 0, "refused": 0, "total": 0}
    measuring = False
    stop = False
    cursor = iter(range(10**12))

    async def publisher() -> None:
        for i in cursor:
            if stop or (args.count and i >= args.count):
                return
            name, call_id, body = messages[i % len(messages)]
            found: dict[str, object] = {headers.EVENT: name}
            if args.partitions:  # ordered mode: what the ingress adds
                found[PARTITION_HEADER] = str(partition_of(decode(body), args.partitions))
            message = aio_pika.Message(
                body,
                content_type="application/json",
                message_id=call_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=found,  # type: ignore[arg-type]
            )
            confirmation = await exchange.publish(  # type: ignore[attr-defined]
                message, routing_key=bodies.routing_key_of(name), mandatory=True
            )
            if type(confirmation).__name__ != "Ack":
                counts["refused"] += 1
                continue
            counts["total"] += 1
            if measuring:
                counts["confirmed"] += 1

    tasks = [asyncio.create_task(publisher()) for _ in range(args.concurrency)]
    started = time.monotonic()
    if args.count:
        await asyncio.gather(*tasks)
        measuring_for = time.monotonic() - started
        counts["confirmed"] = args.count
    else:
        await asyncio.sleep(args.warmup)
        measuring, started = True, time.monotonic()
        await asyncio.sleep(args.duration)
        measuring, stop = False, True
        measuring_for = time.monotonic() - started
        await asyncio.gather(*tasks)
    await connection.close()
    return {
        "rate": counts["confirmed"] / measuring_for,
        "confirmed": counts["confirmed"],
        "refused": counts["refused"],
        "total": counts["total"],
        "seconds": measuring_for,
    }


def spread(message: tuple[str, str, bytes], index: int) -> tuple[str, str, bytes]:
    """Ordered mode: the examples share a few group ids; give them 200 (the signature does not
    cover ``group_id``), so that the callbacks spread over the partitions as real ones do."""
    name, call_id, body = message
    doc = orjson.loads(body)
    if "group_id" in doc:
        doc["group_id"] = f"bench-{index % 200}"
    return name, call_id, orjson.dumps(doc)


async def _work_queue(
    args: argparse.Namespace,
) -> tuple[
    aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractChannel, aio_pika.abc.AbstractQueue
]:
    """A connection, a channel with ``--prefetch``, and the sink's work queue (passively)."""
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.get_queue(Topology(args.prefix).work_queue, ensure=False)
    return connection, channel, queue


async def consume(args: argparse.Namespace) -> dict[str, object]:
    redis = None
    if args.redis:
        import redis.asyncio as aioredis

        redis = aioredis.Redis.from_url(args.redis)
        await redis.ping()
    connection, channel, queue = await _work_queue(args)
    done = asyncio.Event()
    seen = {"count": 0, "new": 0, "first": 0.0, "last": 0.0}
    key_prefix = f"{args.prefix}:bare:"

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if not seen["first"]:
            seen["first"] = time.monotonic()
        if redis is not None:
            if await redis.set(key_prefix + str(message.message_id), b"1", nx=True, px=60_000):
                seen["new"] += 1
        else:
            seen["new"] += 1
        await message.ack()
        seen["count"] += 1
        if seen["count"] >= args.count:
            seen["last"] = time.monotonic()
            done.set()

    await queue.consume(on_message)
    async with asyncio.timeout(args.timeout):
        await done.wait()
    await channel.close()
    await connection.close()
    if redis is not None:
        await redis.aclose()
    count = int(seen["count"])
    return {
        "rate": (count - 1) / max(seen["last"] - seen["first"], 1e-9),
        "consumed": count,
        "distinct": int(seen["new"]),
    }


async def serve(args: argparse.Namespace) -> dict[str, object]:
    from aiohttp import web

    connection, exchange = await _connect(args.url, args.prefix)

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            doc = orjson.loads(body)
            call_id, timestamp, security = doc["callId"], doc["timestamp"], doc["security"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.Response(status=400)
        expected = hashlib.md5(f"{call_id}{SECRET}{timestamp}".encode()).hexdigest()
        if security != expected:
            return web.Response(status=401)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=str(call_id),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        confirmation = await exchange.publish(  # type: ignore[attr-defined]
            message, routing_key="callback", mandatory=True
        )
        if type(confirmation).__name__ != "Ack":
            return web.Response(status=503)
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/callbacks", receive)
    app.router.add_get("/readyz", lambda _: asyncio.sleep(0, web.Response(text="ok")))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    await until_stopped()
    await runner.cleanup()
    await connection.close()
    return {}


async def handle(args: argparse.Namespace) -> dict[str, object]:
    import redis.asyncio as aioredis

    redis = aioredis.Redis.from_url(args.redis)
    await redis.ping()
    connection, _, queue = await _work_queue(args)
    count = itertools.count(1)
    key_prefix = f"{args.prefix}:reference:"

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        key = f"{key_prefix}{message.message_id}"
        await redis.set(key, b"1", nx=True, px=600_000)
        sys.stderr.write(
            f"{HANDLED} {next(count)} {time.monotonic():.6f} {message.message_id} {key}\n"
        )
        await message.ack()

    await queue.consume(on_message)
    await until_stopped()
    await connection.close()
    await redis.aclose()
    return {}


async def until_stopped() -> None:
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopped.set)
    await stopped.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["publish", "fill", "consume", "serve", "handle"])
    parser.add_argument("--port", type=int, default=0, help="serve: the HTTP port")
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--tag", default="bare")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--bodies", type=int, default=5000, help="distinct bodies to cycle")
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--redis", default="")
    parser.add_argument("--partitions", type=int, default=0, help="ordered mode's partitions")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.mode == "fill":
        args.bodies = args.count
    runners = {"consume": consume, "serve": serve, "handle": handle}
    runner = runners.get(args.mode, publish)
    if loop_name() == "uvloop":
        import uvloop

        result = uvloop.run(runner(args))
    else:
        result = asyncio.run(runner(args))
    result["loop"] = loop_name()
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
