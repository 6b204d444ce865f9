"""Waiting for replicas to acknowledge done marks (``SINK_DEDUP_WAIT``), and saying when
they did not.

Redis replicates asynchronously: a done mark the primary acknowledged may not have reached a
replica when the primary dies, and the replica promoted in its place (by Sentinel or the
Cluster) then does not know the callback ran; a re-sent copy would run again. With
``SINK_DEDUP_WAIT=n`` the worker sends ``WAIT n timeout`` right after each batch of done marks,
on the same connection (in a Cluster: to each primary the batch touched), and acks the
callbacks only once that returned. ``WAIT`` is not consensus: a replica that acknowledged may
still not be the one promoted, and the marks stay written on the primary when fewer replicas
acknowledged in time. Then the worker logs ``dedup.wait_short`` (at most once per
:data:`LOG_EVERY` seconds, with the count since) and counts
``callback_sink_dedup_wait_short_total``, and goes on: the callback is handled, and holding
it back would not make its mark any more durable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from callback_sink.sink import logs
from callback_sink.sink.metrics_store import StoreMetrics

log = logs.get("dedup")

__all__ = ["LOG_EVERY", "ReplicaWait", "WaitReport"]

#: While WAITs keep coming back short, one warning this often, seconds (not one per batch).
LOG_EVERY = 10.0


@dataclass(frozen=True)
class ReplicaWait:
    """``WAIT replicas timeout_ms`` after each batch of done marks; ``replicas`` 0: off."""

    replicas: int = 0
    timeout_ms: int = 100

    @classmethod
    def of(cls, settings: Any) -> ReplicaWait:
        """``SINK_DEDUP_WAIT`` and ``SINK_DEDUP_WAIT_TIMEOUT_MS``."""
        return cls(settings.dedup_wait, settings.dedup_wait_timeout_ms)


class WaitReport:
    """Counts the WAITs sent and logs those that came back short."""

    def __init__(self, wait: ReplicaWait, metrics: StoreMetrics | None = None) -> None:
        self.wait = wait
        self.metrics = StoreMetrics.on() if metrics is None else metrics
        #: WAITs short since the last warning.
        self.unreported = 0
        self._logged = float("-inf")

    def acked(self, replicas: int | BaseException, marks: int) -> None:
        """A WAIT after ``marks`` done marks answered ``replicas`` (or failed)."""
        self.metrics.waits.inc()
        if isinstance(replicas, int) and replicas >= self.wait.replicas:
            return
        self.metrics.short.inc()
        self.unreported += 1
        now = time.monotonic()
        if now - self._logged < LOG_EVERY:
            return
        self._logged = now
        log.warning(
            "dedup.wait_short",
            acked=replicas if isinstance(replicas, int) else None,
            wanted=self.wait.replicas,
            timeout_ms=self.wait.timeout_ms,
            marks=marks,
            short_since_last=self.unreported,
            error=None if isinstance(replicas, int) else repr(replicas),
        )
        self.unreported = 0
