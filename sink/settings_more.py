"""Settings declared beside :mod:`callback_sink.sink.settings`, one frozen dataclass per
concern, which :class:`~callback_sink.sink.settings.Settings` inherits. Each field is declared
once with :func:`~callback_sink.sink.setting.declare`, exactly like the fields of ``Settings``:
``--help``, ``callback-sink config`` and the settings reference are generated from all of them.

- :class:`ResilienceSettings`: Redis Sentinel / Cluster, ``WAIT`` for replicas, crash-loop
  detection and worker liveness (the "No single point of failure" work).
- :class:`TlsSettings`: TLS to RabbitMQ and Redis.
- :class:`InboxSettings`: the PostgreSQL inbox of transactional handlers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from callback_sink.sink import redis_client, tls
from callback_sink.sink.config import boolean, read_secret_file
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.setting import BROKER, SERVICES, WORKER, declare

#: Who reads SINK_DEDUP_URL, and so its TLS settings.
TLS_DEDUP = SERVICES | {"backfill"}


@dataclass(frozen=True)
class ResilienceSettings:
    """Dedup-store topology (Sentinel, Cluster), replica acknowledgement, crash loops."""

    crash_loop_deaths: int = declare(
        2, parse=int, low=0, high=1000, kinds=WORKER,
        help="Worker deaths during a callback's lone runs (a redelivery runs alone) before it is "
        "dead-lettered as crash-loop; 0: off (SINK_MAX_DELIVERIES still applies).",
    )  # fmt: skip
    liveness_ttl: float | None = declare(
        None, parse=float, unit="s", above=True, low=0, high=3600, kinds=WORKER,
        default_text="SINK_CLAIM_LEASE",
        help="Each worker keeps a Redis key this long, renewed every third of it: a claim of a "
        "worker whose key is gone is taken over at once, a lone run it left counts as a death. "
        "Shorter: faster takeovers, but a stalled worker is judged dead sooner.",
    )  # fmt: skip

    dedup_wait: int = declare(
        0, parse=int, low=0, high=16, kinds=WORKER,
        help="Replicas that must acknowledge each batch of done marks (Redis WAIT) before the "
        "callback is acked; 0: off. Narrows, does not close, the loss window of a failover.",
    )  # fmt: skip
    dedup_wait_timeout_ms: int = declare(
        100, parse=int, unit="ms", low=1, high=10_000, kinds=WORKER,
        help="How long a WAIT for SINK_DEDUP_WAIT replicas may hold a done mark back; fewer "
        "acknowledgements by then log dedup.wait_short and the callback is acked anyway.",
    )  # fmt: skip


@dataclass(frozen=True)
class TlsSettings:
    """TLS for the broker and the dedup store: ``amqps://`` / ``rediss://`` turn it on, these
    say whom to trust and which client certificate to show (:mod:`callback_sink.sink.tls`)."""

    amqp_tls_ca_file: str = declare(
        "", kinds=BROKER, default_text="the system's CA store",
        help="PEM file of the CA(s) that signed RabbitMQ's certificate (amqps:// only).",
    )  # fmt: skip
    amqp_tls_cert_file: str = declare(
        "", kinds=BROKER,
        help="PEM client certificate shown to RabbitMQ (mutual TLS); needs SINK_AMQP_TLS_KEY_FILE.",
    )  # fmt: skip
    amqp_tls_key_file: str = declare(
        "", kinds=BROKER,
        help="PEM private key (unencrypted) of SINK_AMQP_TLS_CERT_FILE.",
    )  # fmt: skip
    amqp_tls_check_hostname: bool = declare(
        True, parse=boolean, kinds=BROKER,
        help="RabbitMQ's certificate must name the URL's host; false still verifies the chain.",
    )  # fmt: skip
    dedup_tls_ca_file: str = declare(
        "", kinds=TLS_DEDUP, default_text="the system's CA store",
        help="PEM file of the CA(s) that signed Redis's certificate (rediss:// only).",
    )  # fmt: skip
    dedup_tls_cert_file: str = declare(
        "", kinds=TLS_DEDUP,
        help="PEM client certificate shown to Redis (mutual TLS); needs SINK_DEDUP_TLS_KEY_FILE.",
    )  # fmt: skip
    dedup_tls_key_file: str = declare(
        "", kinds=TLS_DEDUP,
        help="PEM private key (unencrypted) of SINK_DEDUP_TLS_CERT_FILE.",
    )  # fmt: skip
    dedup_tls_check_hostname: bool = declare(
        True, parse=boolean, kinds=TLS_DEDUP,
        help="Redis's certificate must name the URL's host; false still verifies the chain.",
    )  # fmt: skip


@dataclass(frozen=True)
class InboxSettings:
    """The PostgreSQL inbox that commits a transactional handler's done mark."""

    inbox_url: str = declare(
        "", secret=True, file=read_secret_file, kinds=WORKER, default_text="none",
        help="PostgreSQL of @on(transactional=True) handlers (postgresql://user:password@host/"
        "db): their writes and done mark commit in one transaction there; never logged.",
    )  # fmt: skip
    inbox_table: str = declare(
        "callback_sink_inbox", kinds=WORKER,
        help="The inbox table ([schema.]table) of done marks, created at start-up; rows "
        "older than SINK_DEDUP_TTL are deleted at start-up and hourly.",
    )  # fmt: skip


#: The schemes SINK_INBOX_URL may use.
INBOX_SCHEMES = ("postgresql://", "postgres://")
#: An inbox table name: ``table`` or ``schema.table``, plain SQL identifiers.
INBOX_TABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}")

first_host = redis_client.first_host
#: The schemes SINK_DEDUP_URL may use.
DEDUP_SCHEMES = ("memory://", *redis_client.SCHEMES)


def check_more(settings: Any) -> None:
    """The checks of the settings declared here (called by ``Settings.check``), each naming
    the variable at fault."""
    if not settings.dedup_url.startswith(DEDUP_SCHEMES):
        raise ConfigError(
            "SINK_DEDUP_URL must start with memory://, redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster:// (rediss+… for TLS)"
        )
    if not settings.dedup_url.startswith("memory://"):
        redis_client.parse(settings.dedup_url)
    if redis_client.is_cluster(settings.dedup_url) and set("{}") & set(settings.topology_prefix):
        raise ConfigError(
            "SINK_TOPOLOGY_PREFIX must not contain { or } with a Redis Cluster SINK_DEDUP_URL: "
            "the keys' hash tags follow it"
        )
    tls.check(settings)
    if settings.inbox_url and not settings.inbox_url.startswith(INBOX_SCHEMES):
        raise ConfigError("SINK_INBOX_URL must start with postgresql://")
    if not INBOX_TABLE.fullmatch(settings.inbox_table):
        raise ConfigError("SINK_INBOX_TABLE must be a table name or schema.table (letters, "
                          "digits, _)")  # fmt: skip
