"""The ingress's Prometheus side: ``GET /metrics``, the spool gauges, the multiprocess directory.

The request counters are counted where the answers are made (:mod:`ingress.app`,
:mod:`ingress.refusals`); the spool's size and age are gauges set once a second by a task of
the application's life (in multiprocess mode a scrape reads the values every child last
wrote, so a value computed at scrape time would only be the scraped child's).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from callback_sink.ingress.spool import Spool
from callback_sink.ingress.spool_files import first_spooled_at
from callback_sink.sink.metrics import MULTIPROC_ENV, IngressMetrics, render

#: How often the spool gauges are refreshed, seconds (Prometheus scrapes every 15 s or so).
GAUGE_INTERVAL = 1.0


def metrics_endpoint(
    metrics: IngressMetrics,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``GET /metrics`` of ``metrics``' registry (every child's, in multiprocess mode)."""

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = render(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    return scrape


def update_spool_gauges(metrics: IngressMetrics, spool: Spool) -> None:
    records = spool.records
    metrics.spool_records.set(records)
    metrics.spool_bytes.set(spool.bytes)
    metrics.spool_usage.set(spool.bytes / spool.max_bytes if spool.max_bytes else 0.0)
    oldest = spool.oldest if records else None
    spooled_at = first_spooled_at(oldest) if oldest is not None else None
    metrics.spool_age.set(max(0.0, time.time() - spooled_at) if spooled_at else 0.0)


def spool_gauges(
    metrics: IngressMetrics, spool: Spool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that keeps the spool gauges current while the application runs."""

    async def gauges(app: web.Application) -> AsyncIterator[None]:
        async def refresh() -> None:
            while True:
                update_spool_gauges(metrics, spool)
                await asyncio.sleep(GAUGE_INTERVAL)

        task = asyncio.create_task(refresh())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        update_spool_gauges(metrics, spool)

    return gauges


def spool_totals(spool: Spool) -> tuple[int, int]:
    """Records and bytes in the spools of every live process of this ingress: ``spool``'s own
    figures plus what each other child last wrote to its spool gauges (at most
    :data:`GAUGE_INTERVAL` old). The children share nothing else, and the gauges' files are
    already where each writes them; a child that died has had its files removed by the
    supervisor, and the orphan it left is counted again once restarted."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return spool.records, spool.bytes
    own = f"_{os.getpid()}.db"
    paths = glob.glob(os.path.join(directory, "gauge_livesum_*.db"))
    others = [path for path in paths if not path.endswith(own)]
    totals = {
        "callback_sink_spool_records": spool.records,
        "callback_sink_spool_bytes": spool.bytes,
    }
    for metric in MultiProcessCollector.merge(others, accumulate=False):  # type: ignore[no-untyped-call]
        for sample in metric.samples:
            if sample.name in totals:
                totals[sample.name] += int(sample.value)
    return totals["callback_sink_spool_records"], totals["callback_sink_spool_bytes"]


@dataclass(frozen=True)
class MultiprocessDir:
    """Where the children of a supervised ingress write their metric values."""

    path: str

    def process_dead(self, pid: int) -> None:
        """Forget a dead child's gauges (its counters stay: totals never go back)."""
        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[MultiprocessDir]:
    """A directory for prometheus_client's multiprocess mode, empty at start: the one in
    ``PROMETHEUS_MULTIPROC_DIR`` if the environment names one (emptied of its values, kept
    afterwards), else a fresh temporary one (removed afterwards)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for stale in glob.glob(os.path.join(given, "*.db")):
            os.remove(stale)
        yield MultiprocessDir(given)
        return
    path = tempfile.mkdtemp(prefix="callback-sink-metrics-")
    try:
        yield MultiprocessDir(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
