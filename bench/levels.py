"""The open-loop levels of the end-to-end row, and its bare reference.

A level sends callbacks at a fixed rate (:mod:`openloop`, no coordinated omission) and times
each one from the moment its POST was due to the moment a handler saw it. The bare reference
runs the same level, at the rate of the sink's 50 % level, through the same path with nothing
of the sink on it (``bare.py serve`` and ``bare.py handle``: one aiohttp process parsing,
checking the MD5 and publishing with confirms; one aio-pika consumer doing a Redis
``SET NX``, then an ack). It does less per callback than the sink, so it is no strict lower
bound; where it misses the p99 target too, the tail at that rate is this machine's rather
than the sink's (docs/explanation/performance-round2.md, "Fifth pass").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import procs
from common import AMQP_URL, BENCH, DRAIN_TIMEOUT, PYTHON, REDIS_URL, log, new_prefix
from services import cleanup

from callback_sink.sink.topology import Topology

if TYPE_CHECKING:
    from harness import Harness


async def run_level(
    bench: Harness,
    url: str,
    rate: float,
    count: int,
    what: str,
    env: dict[str, str],
    consumer: tuple[procs.Child, procs.Handled],
    accepted: int,
) -> dict[str, Any]:
    """One open-loop level of ``count`` callbacks against ``url``, once the machine is quiet
    (``what`` names it if it is not); its figures, ``ok`` its 200s. ``accepted``: callbacks
    the consumer was sent before, all of which it must have handled with this level's."""
    child, handled = consumer
    # not the previous step's leftovers (the broker still settling its acks)
    busy_at_start = await procs.quiet(what)
    tag = new_prefix()
    out = bench.work / f"{tag}.json"
    sender = await bench.start(
        "openloop",
        [
            *(PYTHON, str(BENCH / "openloop.py"), "--url", url),
            *("--rate", f"{rate:.1f}", "--count", str(count)),
            *("--tag", tag, "--out", str(out)),
        ],
        env,
    )
    await sender.wait(bench.config.level_seconds + DRAIN_TIMEOUT)
    run = orjson.loads(out.read_bytes())
    ok = sum(1 for s in run["status"] if s == 200)
    await handled.wait_for(accepted + ok, child, DRAIN_TIMEOUT, idle=10.0)
    level = latency_level(run, handled, rate)
    level["ok"] = ok
    level["busy_cores_at_start"] = round(busy_at_start, 2)
    return level


async def reference_level(bench: Harness, rate: float, count: int) -> dict[str, Any]:
    """The bare reference at ``rate``: a warm-up (a second of it), then the level itself;
    with its non-200 answers, lost and twice (each distinct callId handled exactly once).
    A failure is recorded (``failed``), not raised: the sink's figures of the round stand."""
    prefix = new_prefix()
    port = procs.free_port()
    env = bench.env(prefix, port)
    bare = [PYTHON, str(BENCH / "bare.py")]
    common = ["--url", AMQP_URL, "--prefix", prefix]
    try:
        serve = [*bare, "serve", *common, "--port", str(port)]
        server = await bench.start("reference-serve", serve, env)
        await bench.ready(server, f"http://127.0.0.1:{port}/readyz")  # the queues declared
        handle = [*bare, "handle", *common, "--redis", REDIS_URL, "--prefetch", str(bench.prefetch)]
        handler = await bench.start("reference-handle", handle, env)
        await bench.consuming(handler, Topology(prefix).work_queue)
        handled = procs.Handled(handler.stderr)
        url = f"http://127.0.0.1:{port}/callbacks"
        consumer = (handler, handled)
        warm_count = max(10, int(rate))
        warm = await run_level(bench, url, rate, warm_count, "e2e reference warm-up", env,
                               consumer, 0)  # fmt: skip
        level = await run_level(bench, url, rate, count, "e2e reference", env, consumer,
                                warm["ok"])  # fmt: skip
        accepted = warm["ok"] + level["ok"]
        level["non_200"] = warm_count - warm["ok"] + count - level["ok"]
        level["lost"] = max(0, accepted - len(handled.keys))
        level["twice"] = handled.twice
        await bench.stop(server)
        await bench.stop(handler)
        return level
    except (procs.ChildFailed, TimeoutError, OSError) as exc:
        log(f"e2e reference FAILED: {type(exc).__name__}: {exc}")
        return {"failed": f"{type(exc).__name__}: {exc}"}
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
        # the whole machine meanwhile (the sender included): how near saturation, at what cost
        "machine_cores": run["machine_busy_seconds"] / max(run["wall_seconds"], 1e-9),
        "machine_cpu_us_per_callback": 1e6 * run["machine_busy_seconds"] / max(len(run["due"]), 1),
    }


def pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]
