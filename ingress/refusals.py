"""How the ingress refuses: counted, logged once per request (sampled per reason under a
flood), answered with a short body that tells the caller no internals.

A 4xx body says what was wrong with the request (the caller can fix it); a 503 body is
generic, because its cause (a spool path, a broker error) is ours: that goes to the log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from callback_sink.ingress.limits import Counters
from callback_sink.ingress.sampling import Sampler
from callback_sink.sink import logs
from callback_sink.sink.errors import Rejected, SpoolError, SpoolFull
from callback_sink.sink.metrics import IngressMetrics

log = logs.get("ingress")

#: Easemob only needs the status; people reading a 4xx see why.
REASON_IN_BODY = 200
#: A request-derived value (call_id, event_name, a claimed appkey, a content type) is cut
#: to this many characters in a log line: a 1 MB appkey must not make a 1 MB line.
FIELD_LENGTH = 200
GENERIC_503 = orjson.dumps({"error": "temporarily unavailable, retry later"})


class Refusals:
    """Counts, sampled log lines and response bodies of every refusal of one ingress."""

    def __init__(
        self, counters: Counters, rate: int, metrics: IngressMetrics | None = None
    ) -> None:
        self.counters = counters
        self.sampler = Sampler(rate)
        self.metrics = metrics or IngressMetrics()

    def respond(self, exc: Rejected, remote: str, started: float) -> web.Response:
        """Count and log ``exc``, and answer it."""
        self.record(exc.status, exc.reason, remote=remote, started=started, cause=exc.__cause__,
                    call_id=exc.call_id, event_name=exc.event_name, signed=exc.signed,
                    details=exc.details)  # fmt: skip
        self.metrics.latency.observe(time.perf_counter() - started)
        if exc.status >= 500:
            body = GENERIC_503
        else:
            body = orjson.dumps({"error": exc.reason[:REASON_IN_BODY]})
        response = web.Response(body=body, status=exc.status, content_type="application/json")
        if exc.status in (408, 413, 503):
            response.force_close()  # unread body, or shedding load: do not keep the connection
        return response

    def record(
        self,
        status: int | None,
        reason: str,
        *,
        remote: str | None = None,
        started: float | None = None,
        cause: BaseException | None = None,
        call_id: str | None = None,
        event_name: str | None = None,
        signed: bool = False,
        details: Mapping[str, object] | None = None,
    ) -> None:
        """Count a refusal and log it, unless its reason already logged enough this second.
        ``status`` None: a connection closed without an answer (its head came too late).
        ``call_id`` and ``event_name``: the callback refused, when its body parsed.
        ``signed``: refused after its signature verified (the ``signed`` metric label).
        ``details``: request-derived values, logged as fields beside the fixed ``reason``,
        strings cut to :data:`FIELD_LENGTH` characters."""
        # Keyed by the fixed reason: one counter and one sampling window per kind of
        # refusal, however many different requests are refused for it.
        self.counters.refusals[reason] += 1
        if status is not None:
            self.counters.requests[status] += 1
            self.metrics.answered(status, signed)
        if not self.sampler.admit((status, reason)):
            return
        fields: dict[str, Any] = {"status": status, "reason": reason}
        if details:
            fields.update({name: clip(value) for name, value in details.items()})
        if call_id is not None:
            fields.update(call_id=clip(call_id), event_name=clip(event_name))
        if remote is not None:
            fields["remote"] = remote
        if started is not None:
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if isinstance(cause, SpoolFull):
            # Loud: Easemob retries once, then drops the callback; 90 of these in 30 s ban
            # the app.
            log.error("spool.full", spool_bytes=cause.used, spool_max_bytes=cause.limit, **fields)
        elif isinstance(cause, SpoolError):
            log.error("callback.rejected", **fields)
        else:
            log.warning("callback.rejected", **fields)

    def report_suppressed(self) -> None:
        """One summary line per reason that had lines held back in a window now over."""
        for key, count in self.sampler.drain().items():
            status, kind = key if isinstance(key, tuple) else (None, str(key))
            log.warning(
                "callback.rejected.suppressed", status=status, reason=kind, suppressed=count
            )


def clip(value: Any) -> Any:
    """A string cut to :data:`FIELD_LENGTH` characters; anything else as it is."""
    return value[:FIELD_LENGTH] if isinstance(value, str) else value
