"""The HTTP endpoints of the ingress and of the worker: one declaration, for the docs.

``docs/reference/http.md`` is generated from :data:`ENDPOINTS`, and a test compares it with
the routes the aiohttp applications really serve (``ingress.app.create_app`` with
``ingress.presend.install``, ``worker.probes.create_probe_app``), so a route added, moved or
removed in code without a word here fails the suite.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """One route: who serves it, its method and path, and what it answers."""

    server: str  # "ingress" or "worker"
    method: str
    path: str  # the default path; ``setting`` names the variable that moves it
    summary: str
    statuses: tuple[tuple[int, str], ...]
    setting: str | None = None


_HEALTH = ((200, 'the process is alive: `{"status": "alive"}`'),)
_METRICS = ((200, "the Prometheus text exposition (see [Metrics and alerts](metrics.md))"),)
#: What the ingress answers on its callback paths besides 200 (the refusals), in order.
_REFUSALS = (
    (400, "not a callback: not JSON, not an object, or lacking `callId`, `timestamp` or "
          "`security`; a malformed request head"),
    (401, "the signature does not verify (for its app), or the callback is too old or from "
          "the future (`SINK_MAX_AGE_S`)"),
    (403, "the client is outside `SINK_ALLOWED_NETWORKS` (by `X-Forwarded-For` behind a "
          "trusted proxy)"),
    (408, "the body did not arrive within `SINK_READ_TIMEOUT_S`"),
    (413, "the body is over `SINK_BODY_LIMIT`"),
    (415, "the content type is not JSON"),
    (503, "overloaded (connections, requests in flight or body bytes over their caps), or "
          "RabbitMQ is away and the outage spool is full"),
)  # fmt: skip

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "ingress",
        "POST",
        "/callbacks",
        "Easemob's callbacks: answered 200 once the callback is durable (confirmed by "
        "RabbitMQ, or fsynced to the outage spool).",
        ((200, 'accepted and durable: `{"status":"ok"}`'), *_REFUSALS),
        setting="SINK_PATH",
    ),
    Endpoint(
        "ingress",
        "POST",
        "/presend",
        "Easemob's pre-send callback: answered by the `@presend` chain within "
        "`SINK_PRESEND_BUDGET_MS`, without waiting for RabbitMQ.",
        (
            (
                200,
                'the verdict: `{"valid": true}`, `{"valid": false, "code": …}` or '
                '`{"valid": true, "payload": {…}}`',
            ),
            *_REFUSALS,
        ),
        setting="SINK_PRESEND_PATH",
    ),
    Endpoint("ingress", "GET", "/healthz", "Liveness.", _HEALTH),
    Endpoint(
        "ingress",
        "GET",
        "/readyz",
        "Readiness for a load balancer; the JSON body says why (`broker`, `spool_records`, "
        "`spool_bytes`, `stopping`, `connections`, `inflight`, `crash_loop` …).",
        (
            (200, "able to make callbacks durable"),
            (
                503,
                "stopping, crash-looping, or neither the broker nor the spool can take a callback",
            ),
        ),
    ),
    Endpoint(
        "ingress", "GET", "/metrics", "Prometheus metrics of every ingress process.", _METRICS
    ),
    Endpoint("worker", "GET", "/healthz", "Liveness.", _HEALTH),
    Endpoint(
        "worker",
        "GET",
        "/readyz",
        "Readiness: the JSON body says which of `consuming`, `broker`, `dedup_store` holds.",
        (
            (200, "consuming, its broker connection up and its dedup store answering"),
            (503, "any of them not"),
        ),
    ),
    Endpoint("worker", "GET", "/metrics", "Prometheus metrics of the worker.", _METRICS),
)
