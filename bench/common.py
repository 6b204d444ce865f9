"""What every part of the benchmark shares: where things are, its settings, one result."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
CLI = str(Path(sys.executable).parent / "callback-sink")
ALT_VENV = BENCH / ".venv-alt"
ALT_REQUIREMENTS = BENCH / "alt-requirements.txt"
RESULTS = BENCH / "results"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "bench-secret"
READY_TIMEOUT = 30.0
DRAIN_TIMEOUT = 180.0
#: The end-to-end level whose p99 has a target, and the rate of its bare reference (levels.py).
REFERENCE_FRACTION = 0.5
CLEANUP_TIMEOUT = 20.0
#: wrk settings of every HTTP row: 2 threads (one per core), as many connections as below.
WRK_THREADS = 2
#: The highest rate of distinct callbacks an HTTP row prepares bodies for (per second of wrk);
#: a row whose wrk had to re-send bodies fails rather than count re-sent callIds as stored.
MAX_RATE = 20_000
#: Retry tiers a worker may have made delay queues for (README: Retry delays); deleted after.
DELAY_TIERS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400)
#: Rows whose processes are callback-sink's own (the peak RSS target applies to them).
SINK_ROWS = ("ingress-1p-info", "ingress-1p-warning", "ingress-2p-info")
SINK_ROWS += ("drain-memory", "drain-redis", "drain-ordered", "e2e")
#: Partition queues of the ordered-mode drain (SINK_ORDERING=group, SINK_PARTITIONS).
PARTITIONS = 16
#: Peak RSS target per sink process: 150 MB (decimal) in MiB.
RSS_TARGET_MIB = 150e6 / 2**20


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


@dataclass
class Config:
    rounds: int
    duration: float  # seconds of load per throughput row
    warmup: float  # seconds of wrk / publisher warm-up before it
    connections: int  # wrk connections = confirms in flight of the bare publisher
    drain_count: int  # messages in the pre-filled queue of each drain row
    level_seconds: float  # open-loop seconds per e2e level
    levels: tuple[float, ...]
    limit: int  # quick mode: callbacks per wrk thread (0: by duration)
    alt: bool  # run the FastAPI + Celery and FastAPI + FastStream rows
    only: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One scenario in one round."""

    value: float  # the row's figure (req/s, msg/s, callbacks/s)
    generator: str
    non_200: int | None = None
    lost: int | None = None
    twice: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mib: dict[str, float] = field(default_factory=dict)  # role -> VmHWM
    extra: dict[str, Any] = field(default_factory=dict)
