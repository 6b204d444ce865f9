"""Open-loop load at a fixed rate, for end-to-end latency: the N-th callback is due at
``start + N / rate`` whether or not earlier ones were answered (no coordinated omission),
and its latency is counted from that due time. Run as a child process by ``bench.py``.

Why not wrk: Debian has no wrk2, and wrk's Lua ``delay()`` only paces each connection after
its previous answer (closed loop), which hides queueing. At 25-75 % of the end-to-end
maximum (hundreds to a few thousand requests/s) one event loop keeps up; it reports how
late it actually sent (``send_lag_ms``) and its own CPU share, so the benchmark can show
it was not the bottleneck. It shares the cores with the sink, so it is kept light: keep-alive
connections of its own (:class:`_Conn`, about 130 us a request here, where aiohttp's client
took 350 us: a quarter of a core at 700/s). It collects no garbage while it sends
(``gc.disable``): its own pauses would show as latency.

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
from typing import cast
from urllib.parse import urlsplit

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

import bodies  # noqa: E402
import orjson  # noqa: E402
import procs  # noqa: E402


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time.

    Hand-rolled instead of aiohttp's client: on this 2-core machine the sender shares the CPU
    with the sink it measures, and aiohttp's client cost about 350 us a request here (a quarter
    of a core at 700/s, taken from the sink). This one writes prepared request bytes and reads
    the status line and ``Content-Length``; the ingress always answers with a length.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(-1)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing was asked: not an answer to trust on this one
            self.give_up()
            return
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].split(b"\r\n")
        length = 0
        close = False
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if len(self.buffer) < head_end + 4 + length:
            return
        self.buffer = self.buffer[head_end + 4 + length :]
        status = int(head[0].split(b" ", 2)[1])
        if close:
            self.close()
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(status)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def give_up(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(-1)
        self.close()

    async def request(self, raw: bytes, patience: float) -> int:
        assert self.transport is not None
        if self.closed:  # closed by the server before we could ask
            return -1
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        timer = loop.call_later(patience, self.give_up)
        self.transport.write(raw)
        try:
            return await self.waiter
        finally:
            timer.cancel()


async def run(args: argparse.Namespace) -> dict[str, object]:
    payloads = bodies.build(args.count, args.secret, args.tag)
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    requests = [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in payloads]
    due = [0.0] * args.count
    status = [0] * args.count
    answer_ms = [0.0] * args.count
    lag_ms = [0.0] * args.count
    loop = asyncio.get_running_loop()
    idle: list[_Conn] = []
    slots = asyncio.Semaphore(args.connections)

    async def post(i: int) -> None:
        lag_ms[i] = (time.monotonic() - due[i]) * 1000
        async with slots:
            conn = None
            try:
                while idle and conn is None:
                    candidate = idle.pop()
                    conn = None if candidate.closed else candidate
                if conn is None:
                    _, conn = await loop.create_connection(_Conn, host, port)
                status[i] = await conn.request(requests[i], 30.0)
            except OSError:  # refused; a garbled answer closes the connection: -1 as well
                status[i] = -1
            answer_ms[i] = (time.monotonic() - due[i]) * 1000
            if conn is not None and not conn.closed and status[i] > 0:
                idle.append(conn)
            elif conn is not None:
                conn.close()

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
    await asyncio.sleep(0.2)
    machine_before = procs.machine_busy_seconds()
    for i in range(args.count):
        due[i] = start + i * interval
        delay = due[i] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(i)))
    sent_at = time.monotonic()
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu_before
    machine = procs.machine_busy_seconds() - machine_before
    gc.enable()
    for conn in idle:
        conn.close()
    return {
        "call_ids": [f"{args.tag}-{i}" for i in range(args.count)],
        "due": due,
        "status": status,
        "answer_ms": answer_ms,
        "send_lag_ms": lag_ms,
        "send_seconds": sent_at - start,
        "cpu_seconds": cpu,
        "machine_busy_seconds": machine,  # every process, while sending and answered
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
