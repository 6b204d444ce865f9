"""Settings: one frozen dataclass, read once from ``SINK_*`` environment variables.

Every field has a default that works on a developer's machine with RabbitMQ and Redis on
localhost. A malformed value stops start-up with a :class:`ConfigError` naming the variable.
Secrets are never part of ``repr()``, so settings can be logged safely.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from callback_sink.sink.apps import Apps, parse_apps, read_apps_file
from callback_sink.sink.config import (
    IPNetwork,
    csv,
    floats,
    load,
    networks,
    positive,
    read_env,
    read_secret_lines,
    seconds,
)
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.partition import ORDERINGS

DAY = 24 * 3600

__all__ = ["DAY", "IPNetwork", "Settings", "positive", "read_env", "read_secret_lines"]


@dataclass(frozen=True)
class Settings:
    #: Callback secrets (one per Easemob callback rule); any of them validates a callback.
    secrets: tuple[str, ...] = field(default=(), repr=False)
    #: Apps and their own secrets (``org#app=secret|secret,…``): with it, a callback is
    #: accepted only with a secret of the app its callId names (see :mod:`sink.apps`).
    apps: Apps = field(default=(), repr=False)
    #: How long the exemption from the replay window that ``callback-sink backfill`` opens
    #: for each bucket it asks Easemob to re-send stays open, seconds.
    backfill_window_s: float = 3600.0
    #: RabbitMQ connection URL; for a cluster one URL per node, comma-separated: a process
    #: connects to the first that answers and moves on along the list when its node dies.
    amqp_url: str = field(default="amqp://guest:guest@127.0.0.1:5672/", repr=False)
    #: Prefix of every exchange and queue name, so several sinks can share one broker.
    topology_prefix: str = "callback-sink"
    #: Replicas of each quorum queue (``x-quorum-initial-group-size``); unset: the broker's
    #: default (every node of a 3.10 cluster). Every process of one sink must agree on it.
    quorum_size: int | None = None
    #: ``none`` (fastest) or ``group``: each group's (or conversation's) callbacks reach the
    #: handlers in the order the ingress accepted them, through partition queues.
    ordering: str = "none"
    #: Partition queues in ordered mode; every process of one sink must agree.
    partitions: int = 16
    #: Where per-handler dedup marks live: ``memory://`` (one process) or ``redis://…``.
    dedup_url: str = field(default="memory://", repr=False)
    #: How long a "done" mark is kept, seconds (longer than Easemob's 3-day re-send window).
    dedup_ttl: float = 4 * DAY
    #: A handler running longer is cancelled and retried, seconds (``@on(timeout=…)`` overrides).
    handler_timeout: float = 60.0
    #: A worker's claim on a callback is a lease of this many seconds, renewed while its
    #: handler runs: a worker that died hands its callbacks over within about this long.
    claim_lease: float = 5.0
    #: HTTP listen address and port of the ingress.
    host: str = "127.0.0.1"
    port: int = 8080
    #: HTTP path Easemob posts to.
    path: str = "/callbacks"
    #: HTTP path of the pre-send (moderation) callback, answered by the ``@presend`` chain.
    presend_path: str = "/presend"
    #: The pre-send answer is sent within this many milliseconds, whatever the chain does.
    presend_budget_ms: float = 150.0
    #: Answered on a chain's time-out or error: ``accept`` (Easemob's own default) or ``reject``.
    presend_default: str = "accept"
    #: Handler modules to load, comma-separated dotted paths (plus entry points).
    handlers: tuple[str, ...] = ("callback_sink.handlers.log",)
    #: Unacknowledged messages the broker hands one worker at a time.
    prefetch: int = 64
    #: Callbacks a worker processes at once.
    concurrency: int = 32
    #: Largest accepted body, bytes; larger ones get 413 before being read.
    body_limit: int = 1024 * 1024
    #: How long the ingress waits for a publisher confirm, seconds.
    publish_timeout: float = 5.0
    #: Directory of the ingress's outage spool (callbacks kept on disk while RabbitMQ is down).
    spool_dir: str = "var/spool"
    #: Most bytes the spool may hold; only when it is full does the ingress answer 503.
    spool_max_bytes: int = 1024 * 1024 * 1024
    #: Ingress processes sharing the port (SO_REUSEPORT), each with its own spool under
    #: ``spool_dir``; default: the CPUs this process may run on.
    ingress_processes: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    #: Retry delays for a failing handler, seconds: attempt n waits delays[n-1] (last repeats).
    retry_delays: tuple[float, ...] = (1.0, 10.0, 60.0, 600.0)
    #: Handler attempts of one callback before it is dead-lettered (``@on(retries=…)``).
    max_attempts: int = 5
    #: Deliveries of one callback to any worker (crashes, deferrals and retries included)
    #: before it is dead-lettered: stops a callback that kills its worker from looping.
    max_deliveries: int = 20
    #: How long a worker waits for the broker and the dedup store at start-up, seconds.
    startup_timeout_s: float = 60.0
    #: How long a stopping worker lets running handlers finish, seconds.
    shutdown_timeout: float = 30.0
    #: ``json`` (one JSON object per line) or ``console`` (for people).
    log_format: str = "json"
    #: Minimum log level.
    log_level: str = "info"
    #: Callbacks whose ``timestamp`` is older than this are refused, seconds (0: no limit).
    #: Below the dedup TTL, so any replay inside the window is a duplicate.
    max_age_s: float = 1 * DAY
    #: Client networks allowed to post callbacks (CIDR list); empty allows every address.
    allowed_networks: tuple[IPNetwork, ...] = ()
    #: Proxies whose ``X-Forwarded-For`` is believed (CIDR list); empty believes none.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Deadline for a request's headers, and for its whole body, seconds.
    read_timeout_s: float = 10.0
    #: An idle keep-alive connection is closed after this long, seconds.
    keepalive_timeout_s: float = 75.0
    #: Open connections per ingress process; more get a fast 503 and are closed.
    max_connections: int = 1000
    #: Requests handled at once per ingress process; more get a fast 503.
    max_inflight: int = 512
    #: Refusal log lines per second and reason; the rest are counted in one summary line.
    reject_log_rate: int = 5
    #: Event loop: ``auto`` (uvloop where installed) or ``asyncio``.
    loop: str = "auto"
    #: After SIGTERM, how long a stopping ingress answers /readyz 503 while still accepting
    #: callbacks, seconds: time for load balancers to take it out before it stops listening.
    drain_delay: float = 5.0
    #: Listen address and port of the worker's health and metrics server (port 0: none).
    worker_host: str = "127.0.0.1"
    worker_port: int = 8081
    #: How often a worker reads the depth of the queues for its metrics, seconds.
    queue_poll_s: float = 15.0

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The node URLs of ``SINK_AMQP_URL``, in the order they are tried."""
        return csv(self.amqp_url)

    @property
    def ordered_partitions(self) -> int:
        """Partition queues in use: ``SINK_PARTITIONS`` in ordered mode, else 0."""
        return self.partitions if self.ordering == "group" else 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``SINK_*`` variable; raise :class:`ConfigError` naming a bad one."""
        files = {"secrets": read_secret_lines, "apps": read_apps_file}
        return load(cls, "SINK_", _PARSERS, env, secret_files=files)

    def check(self) -> None:
        """Cross-field checks, each naming the variable at fault."""
        if self.ordering not in ORDERINGS:
            raise ConfigError(f"SINK_ORDERING must be one of {', '.join(ORDERINGS)}")
        if self.secrets and self.apps:
            raise ConfigError(
                "set SINK_APPS (or SINK_APPS_FILE) or SINK_SECRETS (or SINK_SECRETS_FILE), "
                "not both: SINK_SECRETS means any app, SINK_APPS each app its own secrets"
            )
        if not self.dedup_url.startswith(("memory://", "redis://", "rediss://", "unix://")):
            raise ConfigError("SINK_DEDUP_URL must start with memory://, redis:// or rediss://")
        if not self.amqp_urls or not all(
            url.startswith(("amqp://", "amqps://")) for url in self.amqp_urls
        ):
            raise ConfigError("SINK_AMQP_URL must start with amqp:// or amqps:// (each URL)")
        urls = [("SINK_AMQP_URL", url) for url in self.amqp_urls]
        for var, url in (*urls, ("SINK_DEDUP_URL", self.dedup_url)):
            try:
                URL(url).port  # noqa: B018 -- parsing it is the check
            except ValueError as exc:
                raise ConfigError(f"{var} is not a valid URL: {exc}") from None
        if self.log_format not in ("json", "console"):
            raise ConfigError("SINK_LOG_FORMAT must be json or console")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("SINK_LOG_LEVEL must be debug, info, warning or error")
        if not self.path.startswith("/"):
            raise ConfigError("SINK_PATH must start with /")
        if not self.presend_path.startswith("/") or self.presend_path == self.path:
            raise ConfigError("SINK_PRESEND_PATH must start with / and differ from SINK_PATH")
        if self.presend_default not in ("accept", "reject"):
            raise ConfigError("SINK_PRESEND_DEFAULT must be accept or reject")
        for name in ("prefetch", "concurrency", "body_limit", "max_attempts", "max_deliveries",
                     "port"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"SINK_{name.upper()} must be at least 1")
        for name in ("max_connections", "max_inflight", "reject_log_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SINK_{name.upper()} must be at least 1")
        if self.max_age_s and self.max_age_s >= self.dedup_ttl:
            raise ConfigError(
                f"SINK_MAX_AGE_S ({self.max_age_s:g}) must be below SINK_DEDUP_TTL "
                f"({self.dedup_ttl:g}): a replay older than the dedup marks would run again"
            )
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError("SINK_LOOP must be auto, asyncio or uvloop")
        if not 0 <= self.worker_port <= 65535:
            raise ConfigError("SINK_WORKER_PORT must be a port number, or 0 for no server")
        if not self.retry_delays or min(self.retry_delays) <= 0:
            raise ConfigError("SINK_RETRY_DELAYS must be positive numbers of seconds")

    def require_secrets(self) -> None:
        """The ingress cannot verify anything without a secret."""
        if not self.secrets and not self.apps:
            raise ConfigError(
                "no callback secret: set SINK_SECRETS, SINK_SECRETS_FILE, SINK_APPS or "
                "SINK_APPS_FILE"
            )


_PARSERS: dict[str, Callable[[str], Any]] = {
    "secrets": csv,
    "apps": parse_apps,
    "backfill_window_s": positive(float),
    "amqp_url": str,
    "topology_prefix": str,
    "quorum_size": positive(int),
    "ordering": str.lower,
    "partitions": positive(int),
    "dedup_url": str,
    "dedup_ttl": positive(float),
    "handler_timeout": positive(float),
    "claim_lease": positive(float),
    "host": str,
    "port": int,
    "path": str,
    "presend_path": str,
    "presend_budget_ms": positive(float),
    "presend_default": str.lower,
    "handlers": csv,
    "prefetch": int,
    "concurrency": int,
    "body_limit": int,
    "publish_timeout": positive(float),
    "spool_dir": str,
    "spool_max_bytes": positive(int),
    "ingress_processes": positive(int),
    "retry_delays": floats,
    "max_attempts": int,
    "max_deliveries": int,
    "startup_timeout_s": positive(float),
    "shutdown_timeout": positive(float),
    "log_format": str.lower,
    "log_level": str.lower,
    "max_age_s": seconds,
    "allowed_networks": networks,
    "trusted_proxies": networks,
    "read_timeout_s": positive(float),
    "keepalive_timeout_s": positive(float),
    "max_connections": int,
    "max_inflight": int,
    "reject_log_rate": int,
    "loop": str.lower,
    "drain_delay": seconds,
    "worker_host": str,
    "worker_port": int,
    "queue_poll_s": positive(float),
}
