"""Settings: one frozen dataclass, read once from ``SINK_*`` environment variables.

Every field is declared once, with :func:`~callback_sink.sink.setting.declare`: default,
parser, unit, bounds, the processes that read it and a one-line help, from which ``--help``,
``callback-sink config`` and the settings reference are generated. Every default works on a
developer's machine with RabbitMQ and Redis on localhost. A malformed or out-of-bounds value
stops start-up with a :class:`ConfigError` naming the variable. Secrets are never part of
``repr()``, so settings can be logged safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from callback_sink.sink import settings_more as more
from callback_sink.sink.apps import Apps, parse_apps, read_apps_file
from callback_sink.sink.config import (
    IPNetwork,
    boolean,
    csv,
    floats,
    load,
    networks,
    positive,
    read_env,
    read_secret_lines,
)
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.partition import ORDERINGS
from callback_sink.sink.setting import BROKER, EVERY, INGRESS, SERVICES, WORKER, declare

DAY = 24 * 3600
#: The ingress and the parent that supervises several of them.
LISTENER = INGRESS | {"supervisor"}
#: Who reads the callback secrets: the ingress, ``sign`` / ``send``, the emulator.
SECRET_READERS = LISTENER | {"sign", "emulate"}

__all__ = ["DAY", "IPNetwork", "Settings", "positive", "read_env", "read_secret_lines"]


@dataclass(frozen=True)
class Settings(more.ResilienceSettings, more.TlsSettings, more.InboxSettings):
    """Every ``SINK_*`` setting, each declared once (:func:`declare`): the field's default,
    the variable's parser, unit and bounds, the processes that read it and its help."""

    secrets: tuple[str, ...] = declare(
        (), parse=csv, file=read_secret_lines, secret=True, kinds=SECRET_READERS,
        help="Callback secrets, comma-separated, one per Easemob callback rule: any of them "
        "validates a callback of any app. The ingress needs it or SINK_APPS.",
    )  # fmt: skip
    apps: Apps = declare(
        (), parse=parse_apps, file=read_apps_file, secret=True, kinds=SECRET_READERS,
        help="Apps and their own secrets (org#app=secret|secret,…): a callback is accepted "
        "only with a secret of its app. Setting it and SINK_SECRETS is an error.",
    )  # fmt: skip
    backfill_window_s: float = declare(
        3600.0, parse=float, unit="s", low=1, high=7 * DAY, kinds={"backfill"},
        help="How long the replay-window exemption `callback-sink backfill` opens for each "
        "bucket it asks Easemob to re-send stays open.",
    )  # fmt: skip
    amqp_url: str = declare(
        "amqp://guest:guest@127.0.0.1:5672/", secret=True, kinds=BROKER,
        help="RabbitMQ URL; for a cluster one URL per node, comma-separated: a process "
        "connects to the first that answers and moves along the list when its node dies.",
    )  # fmt: skip
    topology_prefix: str = declare(
        "callback-sink", kinds=BROKER | {"backfill"},
        help="Prefix of every exchange, queue and Redis key (several sinks can share a broker).",
    )  # fmt: skip
    quorum_size: int | None = declare(
        None, parse=int, low=1, high=255, kinds=SERVICES,
        default_text="the broker's default",
        help="Replicas of each quorum queue (x-quorum-initial-group-size); every process of "
        "one sink must use the same value.",
    )  # fmt: skip
    ordering: str = declare(
        "none", parse=str.lower, kinds=SERVICES,
        help="none (fastest) or group: each group's (or conversation's) callbacks reach the "
        "handlers in the order the ingress accepted them, through partition queues.",
    )  # fmt: skip
    partitions: int = declare(
        16, parse=int, low=1, high=1024, kinds=SERVICES,
        help="Partition queues in ordered mode; every ingress and worker must agree.",
    )  # fmt: skip
    dedup_url: str = declare(
        "memory://", secret=True, kinds=SERVICES | {"backfill"},
        help="Dedup marks: memory:// (one worker process only), redis://host:port/db, "
        "redis+sentinel://h1:26379,h2:26379/master/db, redis+cluster://h1:7000,h2:7001.",
    )  # fmt: skip
    dedup_ttl: float = declare(
        4 * DAY, parse=float, unit="s", above=True, low=0, high=365 * DAY, kinds=SERVICES,
        help="How long a done mark is kept; longer than Easemob's 3-day re-send window.",
    )  # fmt: skip
    handler_timeout: float = declare(
        60.0, parse=float, unit="s", above=True, low=0, high=DAY, kinds=WORKER,
        help="A handler running longer is cancelled and retried (@on(timeout=…) overrides it).",
    )  # fmt: skip
    claim_lease: float = declare(
        5.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=WORKER,
        help="A worker's claim on a callback is a lease this long, renewed while its handler "
        "runs: a worker that died hands its callbacks over within about this long.",
    )  # fmt: skip
    host: str = declare(
        "127.0.0.1", kinds=LISTENER, help="Listen address of the ingress (0.0.0.0 in containers).",
    )  # fmt: skip
    port: int = declare(
        8080, parse=int, low=1, high=65535, kinds=LISTENER,
        help="Listen port of the ingress; it serves /metrics, /healthz and /readyz too.",
    )  # fmt: skip
    path: str = declare("/callbacks", kinds=INGRESS, help="HTTP path Easemob posts callbacks to.")
    presend_path: str = declare(
        "/presend", kinds=INGRESS,
        help="HTTP path of the pre-send (moderation) callback, answered by the @presend chain.",
    )  # fmt: skip
    presend_budget_ms: float = declare(
        150.0, parse=float, unit="ms", above=True, low=0, high=60_000, kinds=INGRESS,
        help="The pre-send answer leaves within this long, whatever the @presend chain does; "
        "keep it below the rule's wait in Easemob's console (200 ms by default).",
    )  # fmt: skip
    presend_default: str = declare(
        "accept", parse=str.lower, kinds=INGRESS,
        help="Answered when the @presend chain times out or fails: accept (Easemob's own "
        "default) or reject.",
    )  # fmt: skip
    presend_record_queue: int = declare(
        1000, parse=int, low=1, high=1_000_000, kinds=INGRESS,
        help="Pre-send records waiting to be made durable; past it, new ones are dropped, counted.",
    )  # fmt: skip
    handlers: tuple[str, ...] = declare(
        ("callback_sink.handlers.log",), parse=csv, kinds=SERVICES,
        help="Handler modules to load, comma-separated dotted paths (entry points are loaded "
        "too); the ingress loads them for their @presend functions.",
    )  # fmt: skip
    prefetch: int = declare(
        64, parse=int, low=1, high=65535, kinds=WORKER,
        help="Unacknowledged messages RabbitMQ hands one worker at a time.",
    )  # fmt: skip
    concurrency: int = declare(
        32, parse=int, low=1, high=100_000, kinds=WORKER,
        help="Callbacks one worker processes at once.",
    )  # fmt: skip
    body_limit: int = declare(
        1024 * 1024, parse=int, unit="bytes", low=1, high=1024**3, kinds=INGRESS,
        help="Largest accepted body; larger ones get 413 before being read.",
    )  # fmt: skip
    body_budget_bytes: int = declare(
        32 * 1024**2, parse=int, unit="bytes", low=1, high=64 * 1024**3, kinds=INGRESS,
        help="Bytes of request bodies one ingress process buffers at once (a quarter kept for "
        "bodies up to 64 KiB); a body that does not fit gets a fast 503 before being read.",
    )  # fmt: skip
    publish_timeout: float = declare(
        5.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=LISTENER,
        help="How long the ingress waits for RabbitMQ's publisher confirm before spooling.",
    )  # fmt: skip
    spool_dir: str = declare(
        "var/spool", kinds=LISTENER,
        help="Root of the ingress's outage spool (callbacks kept on disk while RabbitMQ is "
        "down); ingress process k spools into <root>/k.",
    )  # fmt: skip
    spool_max_bytes: int = declare(
        1024**3, parse=int, unit="bytes", low=1, kinds=INGRESS,
        help="Most bytes the spool of one ingress process may hold; only when it is full does "
        "the ingress answer 503.",
    )  # fmt: skip
    ingress_processes: int = declare(
        parse=int, low=1, high=1024, kinds={"supervisor"},
        factory=lambda: len(os.sched_getaffinity(0)), default_text="the usable CPUs",
        help="Ingress processes sharing the port (SO_REUSEPORT) under one supervising "
        "parent; --processes overrides it.",
    )  # fmt: skip
    retry_delays: tuple[float, ...] = declare(
        (1.0, 10.0, 60.0, 600.0), parse=floats, unit="s", above=True, low=0, high=7 * DAY,
        kinds=WORKER,
        help="Delays before retrying a failed handler: retry n waits the n-th (the last repeats).",
    )  # fmt: skip
    max_attempts: int = declare(
        5, parse=int, low=1, high=1000, kinds=WORKER,
        help="Handler attempts of one callback before it is dead-lettered (@on(retries=…) "
        "overrides it).",
    )  # fmt: skip
    max_deliveries: int = declare(
        20, parse=int, low=1, high=10_000, kinds=WORKER,
        help="Deliveries of one callback to any worker (crashes included) before it is "
        "dead-lettered: a callback that kills its worker cannot loop forever.",
    )  # fmt: skip
    startup_timeout_s: float = declare(
        60.0, parse=float, unit="s", above=True, low=0, high=DAY, kinds=WORKER,
        help="How long a worker retries an unreachable broker and dedup store at start-up "
        "(a refused login or database fails at once).",
    )  # fmt: skip
    shutdown_timeout: float = declare(
        30.0, parse=float, unit="s", above=True, low=0, high=DAY, kinds=LISTENER | WORKER,
        help="How long a stopping process lets requests and handlers in flight finish.",
    )  # fmt: skip
    log_format: str = declare(
        "json", parse=str.lower, kinds=EVERY,
        help="json (one object per line) or console (for people).",
    )  # fmt: skip
    log_level: str = declare(
        "info", parse=str.lower, kinds=EVERY, help="debug, info, warning or error."
    )
    log_accepted: bool = declare(
        True, parse=boolean, kinds=SERVICES,
        help="false drops the two info lines of every successful callback (callback.accepted, "
        "callback.handled ok/duplicate); refusals, retries and dead letters are still logged.",
    )  # fmt: skip
    max_age_s: float = declare(
        1 * DAY, parse=float, unit="s", low=0, high=365 * DAY, kinds=INGRESS | {"backfill"},
        help="Callbacks whose timestamp is older are refused (0: no limit); must stay below "
        "SINK_DEDUP_TTL, so that any replay inside the window is a duplicate.",
    )  # fmt: skip
    edge_dedup_size: int = declare(
        10_000, parse=int, low=0, high=10_000_000, kinds=INGRESS,
        help="Callbacks each ingress process remembers as made durable (by callId): a re-post "
        "of one is answered 200 without being queued or spooled again (0: remember none).",
    )  # fmt: skip
    allowed_networks: tuple[IPNetwork, ...] = declare(
        (), parse=networks, kinds=INGRESS, default_text="all",
        help="Client networks allowed on the ingress port (callbacks, probes and /metrics "
        "alike), CIDR list; others are closed at connect. Behind a trusted proxy a callback's "
        "client is checked from X-Forwarded-For (403).",
    )  # fmt: skip
    trusted_proxies: tuple[IPNetwork, ...] = declare(
        (), parse=networks, kinds=INGRESS,
        help="Proxies whose X-Forwarded-For is believed, CIDR list; empty believes none.",
    )  # fmt: skip
    read_timeout_s: float = declare(
        10.0, parse=float, unit="s", above=True, low=0, high=3600, kinds=INGRESS,
        help="Deadline for a request's head, and for its whole body.",
    )  # fmt: skip
    keepalive_timeout_s: float = declare(
        75.0, parse=float, unit="s", above=True, low=0, high=DAY, kinds=INGRESS,
        help="An idle keep-alive connection is closed after this long (keep it above your "
        "load balancer's idle time-out).",
    )  # fmt: skip
    max_connections: int = declare(
        1000, parse=int, low=1, high=1_000_000, kinds=INGRESS,
        help="Open connections per ingress process; at the cap the oldest idle keep-alive one "
        "is closed for a new one, and with none idle the new one gets a fast 503.",
    )  # fmt: skip
    keepalive_max_requests: int = declare(
        100, parse=int, low=1, high=1_000_000, kinds=INGRESS,
        help="Requests one connection may carry; the last one's answer closes it.",
    )  # fmt: skip
    max_inflight: int = declare(
        512, parse=int, low=1, high=1_000_000, kinds=INGRESS,
        help="Requests handled at once per ingress process; more get a fast 503.",
    )  # fmt: skip
    reject_log_rate: int = declare(
        5, parse=int, unit="/s", low=1, high=10_000, kinds=INGRESS,
        help="Refusal log lines per reason; the rest are counted in one summary line.",
    )  # fmt: skip
    loop: str = declare(
        "auto", parse=str.lower, kinds=SERVICES,
        help="Event loop: auto (uvloop where installed), uvloop or asyncio.",
    )  # fmt: skip
    drain_delay: float = declare(
        5.0, parse=float, unit="s", low=0, high=3600, kinds=LISTENER,
        help="After SIGTERM, how long the ingress answers /readyz 503 while still accepting "
        "callbacks, so load balancers take it out first (0: stop at once).",
    )  # fmt: skip
    worker_host: str = declare(
        "127.0.0.1", kinds=WORKER,
        help="Listen address of the worker's health and metrics server (0.0.0.0 in containers).",
    )  # fmt: skip
    worker_port: int = declare(
        8081, parse=int, low=0, high=65535, kinds=WORKER,
        help="Port of the worker's /healthz, /readyz and /metrics (0: no server); workers on "
        "one host each need their own.",
    )  # fmt: skip
    queue_poll_s: float = declare(
        15.0, parse=float, unit="s", above=True, low=0, high=DAY, kinds=SERVICES,
        help="How often a worker, and process 0 of an ingress, read the queues' depths and "
        "consumers from the broker for their metrics.",
    )  # fmt: skip
    metrics_linger_s: float = declare(
        15.0, parse=float, unit="s", low=0, high=3600, kinds=WORKER,
        help="After its drain, how long a stopped worker still serves /metrics so that a last "
        "scrape sees its final counts (0: none); at most what the drain left of "
        "SINK_SHUTDOWN_TIMEOUT (callback-sink run never lingers).",
    )  # fmt: skip

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
        return load(cls, "SINK_", env)

    def check(self) -> None:
        """Checks beyond one value's parser and bounds, each naming the variable at fault."""
        if self.ordering not in ORDERINGS:
            raise ConfigError(f"SINK_ORDERING must be one of {', '.join(ORDERINGS)}")
        if self.secrets and self.apps:
            raise ConfigError(
                "set SINK_APPS (or SINK_APPS_FILE) or SINK_SECRETS (or SINK_SECRETS_FILE), "
                "not both: SINK_SECRETS means any app, SINK_APPS each app its own secrets"
            )
        more.check_more(self)
        if not self.amqp_urls or not all(
            url.startswith(("amqp://", "amqps://")) for url in self.amqp_urls
        ):
            raise ConfigError("SINK_AMQP_URL must start with amqp:// or amqps:// (each URL)")
        urls = [("SINK_AMQP_URL", url) for url in self.amqp_urls]
        for var, url in (*urls, ("SINK_DEDUP_URL", more.first_host(self.dedup_url))):
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
        if self.max_age_s and self.max_age_s >= self.dedup_ttl:
            raise ConfigError(
                f"SINK_MAX_AGE_S ({self.max_age_s:g}) must be below SINK_DEDUP_TTL "
                f"({self.dedup_ttl:g}): a replay older than the dedup marks would run again"
            )
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError("SINK_LOOP must be auto, asyncio or uvloop")
        if not self.retry_delays:
            raise ConfigError("SINK_RETRY_DELAYS must list at least one delay")
        if self.body_budget_bytes - self.body_budget_bytes // 4 < self.body_limit:
            raise ConfigError("SINK_BODY_BUDGET_BYTES must be at least 4/3 of SINK_BODY_LIMIT")

    def require_secrets(self) -> None:
        """The ingress cannot verify anything without a secret."""
        if not self.secrets and not self.apps:
            raise ConfigError(
                "no callback secret: set SINK_SECRETS, SINK_SECRETS_FILE, SINK_APPS or "
                "SINK_APPS_FILE"
            )
