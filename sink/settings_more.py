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

from dataclasses import dataclass
from typing import Any

from callback_sink.sink.errors import ConfigError


@dataclass(frozen=True)
class ResilienceSettings:
    """Dedup-store topology (Sentinel, Cluster), replica acknowledgement, crash loops."""


@dataclass(frozen=True)
class TlsSettings:
    """TLS for the broker and the dedup store."""


@dataclass(frozen=True)
class InboxSettings:
    """The PostgreSQL inbox that commits a transactional handler's done mark."""


#: The schemes SINK_DEDUP_URL may use.
DEDUP_SCHEMES = ("memory://", "redis://", "rediss://", "unix://")


def check_more(settings: Any) -> None:
    """The checks of the settings declared here (called by ``Settings.check``), each naming
    the variable at fault."""
    if not settings.dedup_url.startswith(DEDUP_SCHEMES):
        raise ConfigError("SINK_DEDUP_URL must start with memory://, redis:// or rediss://")
