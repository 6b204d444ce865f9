"""Metrics of the dedup store's replication (``sink/metrics.py`` holds the rest).

- ``callback_sink_dedup_waits_total``: batches of done marks a worker made wait for
  ``SINK_DEDUP_WAIT`` replicas (Redis ``WAIT``; one per Redis node a batch touched);
- ``callback_sink_dedup_wait_short_total``: those that fewer replicas acknowledged within
  ``SINK_DEDUP_WAIT_TIMEOUT_MS``: their done marks live on the primary alone for a while, and a
  failover then may lose them (the callback would run again if Easemob re-sent it).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from callback_sink.sink.metrics import _Group

__all__ = ["StoreMetrics"]


class StoreMetrics(_Group):
    """Counted by :mod:`callback_sink.worker.replica_wait`."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self.waits = Counter(
            "callback_sink_dedup_waits",
            "Batches of done marks that waited for SINK_DEDUP_WAIT replicas (Redis WAIT)",
            registry=registry,
        )
        self.short = Counter(
            "callback_sink_dedup_wait_short",
            "WAITs that fewer than SINK_DEDUP_WAIT replicas acknowledged in time",
            registry=registry,
        )
