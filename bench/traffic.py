"""The benchmark's load: signed spec examples with unique callIds, posted with bounded
concurrency from one aiohttp session, every answer timed."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from sink.errors import DecodeError
from sink.events import from_document, parse
from sink.examples import load_examples, resign

#: A request that has no answer after this long counts as an error, seconds.
REQUEST_TIMEOUT = 30.0
HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Batch:
    bodies: list[bytes]
    names: Counter[str]  # event name -> callbacks of it in this batch


def build(count: int, secret: str, tag: str) -> Batch:
    """``count`` callbacks cycling through every spec example the ingress accepts, each
    re-signed with ``secret`` under a unique callId (``bench-{tag}-{i}``)."""
    examples = []
    for example in load_examples():
        try:
            parse(orjson.dumps(resign(example.body, secret)))
        except DecodeError:
            continue
        examples.append(example.body)
    bodies: list[bytes] = []
    names: Counter[str] = Counter()
    for i in range(count):
        body = resign(examples[i % len(examples)], secret, call_id=f"bench-{tag}-{i}")
        names[from_document(body).name] += 1
        bodies.append(orjson.dumps(body))
    return Batch(bodies, names)


@dataclass
class Load:
    """What one batch of requests got back."""

    started: float = 0.0  # time.monotonic() of the first request
    finished: float = 0.0  # ... and of the last answer
    latencies_ms: list[float] = field(default_factory=list)  # of the 200 answers only
    outcomes: Counter[str] = field(default_factory=Counter)  # "200", "503", "ClientError" ...

    @property
    def accepted(self) -> int:
        return self.outcomes["200"]

    @property
    def refused(self) -> int:
        return sum(self.outcomes.values()) - self.accepted

    @property
    def rate(self) -> float:
        """Accepted callbacks per second, from the first request to the last answer."""
        return self.accepted / max(self.finished - self.started, 1e-9)

    def percentile(self, q: int) -> float:
        """The ``q``-th percentile of the 200 answers' latency, milliseconds."""
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


async def send(url: str, bodies: Sequence[bytes], concurrency: int) -> Load:
    """POST every body to ``url`` over at most ``concurrency`` connections at once."""
    load = Load()
    next_index = iter(range(len(bodies)))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def sender() -> None:
            for index in next_index:
                await _post(session, url, bodies[index], load)

        load.started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        load.finished = time.monotonic()
    return load


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, load: Load) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=HEADERS) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.outcomes[type(exc).__name__] += 1
        return
    load.outcomes[str(status)] += 1
    if status == 200:
        load.latencies_ms.append((time.perf_counter() - started) * 1000)
