"""Prometheus metrics: every metric of the sink is declared here, counted where it happens.

Each group is a class that declares its metrics on a registry when it is built (so every
series exists, at zero, from the start of the process: dashboards and alerts never see one
missing) and pre-binds the labelled children, so that counting on a hot path is one
``inc()`` or ``observe()`` without a label look-up:

- :class:`IngressMetrics`: answers of the callback path by status, accepted callbacks by
  where they became durable, request latency, the outage spool's size and age;
- :class:`WorkerMetrics`: handler outcomes and latency, readiness;
- :class:`QueueMetrics`: the queues' depths and consumers as the broker reports them, set by
  whichever process polls (every worker, and process 0 of an ingress);
- :class:`RestMetrics`: Easemob's REST answers; :class:`BuildInfo`: the version, always 1.

A process serves them with :func:`render`. A multi-process ingress runs in prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor for its children):
every child writes its values to files there and any child's scrape sums them all (counters,
histograms and count gauges summed, the spool's age the maximum), plus the standard process
metrics summed over the live children (:class:`LiveProcesses`).

Several processes report the same broker figure for a queue (every worker, ingress process
0): aggregate ``callback_sink_queue_*`` with ``max by (queue)``, never a sum (``livemax``).

Labels are bounded: HTTP statuses of our own answers, handler names from the loaded registry,
fixed outcome and queue names. Event names never become an ingress label: a hostile client
would choose them.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from callback_sink.sink import metrics_pid  # noqa: F401  (before any metric exists)
from callback_sink.sink.outcomes import Outcome

__all__ = [
    "REGISTRY",
    "BuildInfo",
    "IngressMetrics",
    "QueueMetrics",
    "RestMetrics",
    "WorkerMetrics",
    "render",
]

#: The environment variable that puts prometheus_client into multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The statuses the callback path answers (pre-created so a rate of 401s is 0, not absent).
INGRESS_STATUSES = (200, 400, 401, 403, 408, 413, 415, 503)
#: Statuses that can answer a callback whose signature verified (``signed="yes"``): accepted,
#: too old or from the future, or the spool full with the broker down. Only these count
#: towards Easemob's ban of an app (failures of its signed callbacks).
SIGNED_STATUSES = (200, 401, 503)
_YES_NO = {True: "yes", False: "no"}
DURABLE = ("broker", "spool")
#: What became of one handler's run of one delivery: the sink's one vocabulary of outcomes.
OUTCOMES = tuple(o.value for o in Outcome)
#: ``retry`` sums every delay queue.
QUEUES = ("work", "retry", "dead_letter")
#: Easemob answers worth a series of their own; ``error`` is no answer at all.
REST_STATUSES = ("200", "400", "401", "403", "404", "429", "500", "503", "error")
#: The callback path answers in milliseconds, or waits for a publisher confirm (seconds).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Handlers run from milliseconds to their time-out (60 s by default).
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

G = TypeVar("G", bound="_Group")

# ``*_created`` series double every scrape and no dashboard or alert of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Group:
    """Metrics declared once per registry: :meth:`on` returns the group already declared."""

    _declared: ClassVar[dict[tuple[type, int], Any]] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    @classmethod
    def on(cls: type[G], registry: CollectorRegistry = REGISTRY) -> G:
        key = (cls, id(registry))
        group = _Group._declared.get(key)
        if group is None or group.registry is not registry:
            group = _Group._declared[key] = cls(registry)
        assert isinstance(group, cls)
        return group


class IngressMetrics(_Group):
    """The ingress's metrics; :meth:`answered` counts every answer of the callback path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        r = self.registry
        BuildInfo.on(r)
        self.requests = Counter(
            "callback_sink_ingress_requests",
            "Answers of the callback path, by HTTP status and whether the callback's "
            "signature had verified (signed=yes|no)",
            ["status", "signed"],
            registry=r,
        )
        unsigned = [(s, False) for s in INGRESS_STATUSES if s != 200]  # a 200 is always signed
        pairs = unsigned + [(s, True) for s in SIGNED_STATUSES]
        self._status = {(s, y): self.requests.labels(str(s), _YES_NO[y]) for s, y in pairs}
        accepted = Counter(
            "callback_sink_ingress_accepted",
            "Callbacks answered 200, by where they became durable",
            ["durable"],
            registry=r,
        )
        self.accepted = {d: accepted.labels(d) for d in DURABLE}
        self.latency = Histogram(
            "callback_sink_ingress_request_seconds",
            "Time to answer the callback path",
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.spool_records = Gauge(
            "callback_sink_spool_records",
            "Callbacks in the outage spool",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spool_bytes = Gauge(
            "callback_sink_spool_bytes",
            "Bytes of the outage spool's segment files",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spool_age = Gauge(
            "callback_sink_spool_oldest_age_seconds",
            "Age of the oldest spooled callback (0: empty)",
            registry=r,
            multiprocess_mode="livemax",
        )
        # Each process has its own spool and SINK_SPOOL_MAX_BYTES quota, and answers 503 when
        # its own is full: the fullest one matters, which a sum of bytes would hide.
        self.spool_usage = Gauge(
            "callback_sink_spool_usage_ratio",
            "Bytes of the fullest outage spool over its quota, SINK_SPOOL_MAX_BYTES (0 to 1)",
            registry=r,
            multiprocess_mode="livemax",
        )

    def answered(self, status: int, signed: bool = False) -> None:
        """Count one answer; ``signed``: given after the callback's signature verified."""
        child = self._status.get((status, signed))
        if child is None:  # a status of ours not listed above: bounded all the same
            label = _YES_NO[signed]
            child = self._status[status, signed] = self.requests.labels(str(status), label)
        child.inc()


class QueueMetrics(_Group):
    """The sink's queues as the broker reports them (:mod:`worker.depth` sets them)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        messages = Gauge(
            "callback_sink_queue_messages",
            "Messages ready in the sink's queues (the broker's figure: aggregate with max)",
            ["queue"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        consumers = Gauge(
            "callback_sink_queue_consumers",
            "Consumers of the sink's queues, the most of any queue of the label (the broker's "
            "figure: aggregate with max)",
            ["queue"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.messages = {q: messages.labels(q) for q in QUEUES}
        self.consumers = {q: consumers.labels(q) for q in QUEUES}


class BuildInfo(_Group):
    """``callback_sink_build_info{version, python}`` = 1: which build a process runs."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        info = Gauge(
            "callback_sink_build_info",
            "1, labelled with the version of callback-sink and of Python the process runs",
            ["version", "python"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        info.labels(version(), platform.python_version()).set(1)


def version() -> str:
    """The installed version of callback-sink ("unknown" when run from a bare checkout)."""
    try:
        return importlib.metadata.version("callback-sink")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class WorkerMetrics(_Group):
    """The worker's metrics; :meth:`bind` pre-creates the series of the loaded handlers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        r = self.registry
        self.handled_total = Counter(
            "callback_sink_worker_handled",
            "Handler runs of a delivery, by handler and outcome",
            ["handler", "outcome"],
            registry=r,
        )
        self.seconds = Histogram(
            "callback_sink_worker_handler_seconds",
            "Time a handler ran",
            ["handler"],
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        BuildInfo.on(r)
        #: The queue gauges this worker's poll sets (shared with an ingress in one process).
        self.depths = QueueMetrics.on(r)
        self.queues = self.depths.messages
        self.ready = Gauge(
            "callback_sink_worker_ready",
            "1 while the worker consumes and its dedup store answers",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.channel_closed = Counter(
            "callback_sink_worker_channel_closed",
            "Channels the broker closed (consumer_timeout)",
            registry=r,
        )
        self._handled: dict[tuple[str, str], Any] = {}
        self._seconds: dict[str, Any] = {}

    def bind(self, handlers: Iterable[str]) -> None:
        for name in handlers:
            for outcome in OUTCOMES:
                self.handled(name, outcome, 0)
            self._histogram(name)

    def handled(self, handler: str, outcome: str, count: int = 1) -> None:
        child = self._handled.get((handler, outcome))
        if child is None:
            child = self._handled[handler, outcome] = self.handled_total.labels(handler, outcome)
        child.inc(count)

    def ran(self, handler: str, seconds: float) -> None:
        self._histogram(handler).observe(seconds)

    def _histogram(self, handler: str) -> Any:
        child = self._seconds.get(handler)
        if child is None:
            child = self._seconds[handler] = self.seconds.labels(handler)
        return child


class RestMetrics(_Group):
    """Answers of Easemob's REST API; the client counts into ``RestMetrics.on()`` by default."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(CollectorRegistry() if registry is None else registry)
        self.requests = Counter(
            "callback_sink_rest_requests",
            "Answers of Easemob's REST API, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self._status = {s: self.requests.labels(s) for s in REST_STATUSES}

    def answered(self, status: int | str) -> None:
        key = str(status)
        child = self._status.get(key)
        if child is None:
            child = self._status[key] = self.requests.labels(key)
        child.inc()


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition of ``registry`` and its content type; in multiprocess mode, of
    every process writing into ``PROMETHEUS_MULTIPROC_DIR`` instead."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        registry.register(LiveProcesses(directory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")
#: Per-process values that are a property of the oldest process, or of the tightest one.
_SMALLEST = ("process_start_time_seconds", "process_max_fds")


class LiveProcesses(Collector):
    """The standard ``process_*`` metrics summed over the live processes of a multiprocess
    directory (those holding live gauge files; the supervisor removes a dead child's), the
    start time and file-descriptor limit the smallest."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def pids(self) -> set[int]:
        found = (_LIVE_FILE.search(p) for p in glob.glob(os.path.join(self.directory, "*.db")))
        return {int(m.group(1)) for m in found if m and os.path.exists(f"/proc/{m.group(1)}")}

    def collect(self) -> Iterator[Metric]:
        values: dict[str, list[float]] = defaultdict(list)
        docs: dict[str, str] = {}
        for pid in sorted(self.pids()):
            for family in ProcessCollector(pid=_fixed(pid), registry=None).collect():
                docs[family.name] = family.documentation
                for sample in family.samples:
                    values[sample.name].append(sample.value)
        for name, found in values.items():
            base = name.removesuffix("_total")
            value = min(found) if name in _SMALLEST else sum(found)
            kind = CounterMetricFamily if base != name else GaugeMetricFamily
            yield kind(base, docs.get(base, base), value)


def _fixed(pid: int) -> Callable[[], int]:
    return lambda: pid
