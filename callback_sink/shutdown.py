"""How long each process may take to stop after SIGTERM: the sums behind the supervisor's kill
time-out, the manifests' ``terminationGracePeriodSeconds`` and compose's ``stop_grace_period``.

Each step is bounded by a setting or a named constant of the code that waits; the sum is the
worst case, when every step waits its whole bound (a broker that stops confirming while the
drainer, an adopter and pre-send records all have a batch in hand). ``tests/test_k8s.py``
checks deploy/ against these sums, so a setting raised in a manifest without its grace period
fails the tests instead of a rollout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from callback_sink.handlers.registry import Handler
from callback_sink.ingress.app import DRAINER_STOP_MARGIN
from callback_sink.ingress.presend import RECORD_STOP_MARGIN
from callback_sink.sink.settings import Settings
from callback_sink.worker.consumer import CANCEL_GRACE

#: Closing the broker connection, the spool's last fsync, the dedup store; seconds.
CLOSE_MARGIN = 5.0
#: After its last handler, a delivery's settle: the retry or dead-letter copy's confirm, the ack.
SETTLE_MARGIN = 5.0


@dataclass(frozen=True)
class ShutdownStep:
    """One wait of a stopping process: what it waits for, its bound, and where that comes from."""

    what: str
    seconds: float
    bound: str


def ingress_steps(settings: Settings) -> list[ShutdownStep]:
    """One ingress process from SIGTERM to exit (``callback_sink.service.serve_ingress``, then
    the app's cleanup contexts, one after another)."""
    record = settings.publish_timeout + RECORD_STOP_MARGIN
    batch = settings.publish_timeout + DRAINER_STOP_MARGIN
    return [
        ShutdownStep("/readyz 503, still accepting", settings.drain_delay, "SINK_DRAIN_DELAY"),
        ShutdownStep("requests in flight", settings.shutdown_timeout, "SINK_SHUTDOWN_TIMEOUT"),
        ShutdownStep("pre-send records in flight", record, "SINK_PUBLISH_TIMEOUT + 5"),
        ShutdownStep("an adopted spool's batch", batch, "SINK_PUBLISH_TIMEOUT + 5"),
        ShutdownStep("the drainer's batch", batch, "SINK_PUBLISH_TIMEOUT + 5"),
        ShutdownStep("broker connection, spool", CLOSE_MARGIN, "5"),
    ]


def ingress_stop_seconds(settings: Settings) -> float:
    """The worst case of :func:`ingress_steps`: the supervisor kills a child still running
    :data:`~callback_sink.service.CHILD_STOP_MARGIN` after it."""
    return sum(step.seconds for step in ingress_steps(settings))


def worker_steps(settings: Settings) -> list[ShutdownStep]:
    """A worker from SIGTERM to exit (:meth:`callback_sink.worker.consumer.Worker.stop`; the
    metrics linger only within what is left of ``SINK_SHUTDOWN_TIMEOUT``)."""
    return [
        ShutdownStep("handlers in flight", settings.shutdown_timeout, "SINK_SHUTDOWN_TIMEOUT"),
        ShutdownStep("cancelled handlers unwind", CANCEL_GRACE, "5"),
        ShutdownStep("leases, broker, dedup store", CLOSE_MARGIN, "5"),
    ]


def worker_stop_seconds(settings: Settings) -> float:
    return sum(step.seconds for step in worker_steps(settings))


def chain_seconds(settings: Settings, handlers: Iterable[Handler]) -> float:
    """The longest one callback's handlers can run, one after another, and be settled: every
    handler's time-out (``@on(timeout=…)`` or ``SINK_HANDLER_TIMEOUT``) plus the settle. A
    worker's ``SINK_SHUTDOWN_TIMEOUT`` at least this long never cuts a callback off at
    shutdown: each ends as it would have (done, retried or dead-lettered)."""
    timeouts = [h.options.timeout or settings.handler_timeout for h in handlers]
    return sum(timeouts) + SETTLE_MARGIN
