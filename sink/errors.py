"""The one exception tree of callback-sink.

Exceptions that steer control flow carry their data: :class:`Retry` carries the delay a
handler asks for, :class:`Rejected` the HTTP status and the reason the ingress logs.
"""

from __future__ import annotations

from collections.abc import Mapping


class SinkError(Exception):
    """Base of every error raised on purpose by callback-sink."""


class ConfigError(SinkError):
    """A setting is missing or malformed; start-up stops with this message."""


class HandlerLoadError(ConfigError):
    """A handler module cannot be imported or subscribes to an unknown event name."""


class StartupError(SinkError):
    """A process cannot start: a handler's start-up hook failed, or the broker or the dedup
    store did not answer within ``SINK_STARTUP_TIMEOUT_S``. One line, then a non-zero exit."""


class TlsRefused(SinkError, ConnectionError):
    """A TLS handshake with ``server`` (host:port) failed for a reason waiting cannot fix:
    its certificate is not trusted or does not name it, or the port does not speak TLS.
    A ``ConnectionError``, so that code handling a failed connect handles it too."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"TLS with {server} failed: {reason}")
        self.server = server
        self.reason = reason


class Rejected(SinkError):
    """The ingress refuses a callback: ``status`` is the HTTP answer, ``reason`` is logged.

    ``call_id`` and ``event_name`` name the callback refused once its body parsed (a bad
    signature, too old, an unlisted app); None for a body refused before it parsed.
    ``signed``: refused after its signature verified (too old, from the future, the spool
    full): a failure Easemob counts towards banning the app.
    ``reason`` is a fixed string, the same for every request refused for that reason (it
    keys the refusal counters and the log sampling); what varies with the request (a
    length, an age, the appkey it claims) goes in ``details``, logged as separate fields,
    each string cut short."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        call_id: str | None = None,
        event_name: str | None = None,
        signed: bool = False,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.call_id = call_id
        self.event_name = event_name
        self.signed = signed
        self.details = details or {}


class DecodeError(SinkError):
    """A body is not a callback document (not JSON, not an object, missing fields)."""


class PublishError(SinkError):
    """RabbitMQ did not confirm a publish: the callback is not durable yet."""


class DedupUnavailable(SinkError):
    """The dedup store cannot be reached; no handler may run without a claim."""


class HandlerError(SinkError):
    """Base for exceptions a handler raises to tell the worker what to do."""


class Retry(HandlerError):
    """Raise from a handler to have the callback retried after ``delay`` seconds.

    ``Retry(delay=30)`` asks for a specific delay; ``Retry()`` takes the next configured tier.
    """

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        if delay is not None and not (0 <= delay < float("inf")):
            raise ValueError(f"Retry(delay={delay!r}): the delay must be a finite number >= 0")
        super().__init__(message)
        self.delay = delay


class PermanentError(HandlerError):
    """Raise from a handler when retrying cannot help: the callback is dead-lettered at once."""


class EasemobError(SinkError):
    """Easemob's REST API refused a request: its error body, field for field.

    ``status`` is the HTTP status (0 when no answer came at all); ``error`` is Easemob's
    machine-readable code (``service_resource_not_found``, ``forbidden_op`` …), which is
    what callers branch on; ``exception`` and ``error_description`` are kept for people.
    """

    def __init__(
        self, status: int, error: str, exception: str = "", error_description: str = ""
    ) -> None:
        super().__init__(f"Easemob answered {status} {error}: {error_description}".rstrip(": "))
        self.status = status
        self.error = error
        self.exception = exception
        self.error_description = error_description


class EasemobThrottled(EasemobError):
    """429 or 503 on every attempt: over the app's quota, or Easemob is busy. Retry later."""


class EasemobUnreachable(EasemobError):
    """No HTTP answer (connection refused, reset, time-out): ``status`` is 0."""


class BatchTooLarge(SinkError):
    """A batch call names more users than Easemob accepts in one request (checked before
    sending): ``count`` users were given, ``limit`` is the most allowed."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} users in one request; Easemob accepts at most {limit}")
        self.count = count
        self.limit = limit


class SpoolError(SinkError):
    """The ingress's outage spool cannot take a callback (I/O failure, closed, locked)."""


class SpoolFull(SpoolError):
    """The spool holds ``used`` of its ``limit`` bytes: no room for ``needed`` more."""

    def __init__(self, used: int, limit: int, needed: int) -> None:
        super().__init__(f"spool full: {used} of {limit} bytes used, {needed} more needed")
        self.used = used
        self.limit = limit
        self.needed = needed


class InboxDuplicate(SinkError):
    """The inbox already holds ``handler``'s row for this callback: its transaction committed
    in an earlier delivery, so this one is skipped (the ``duplicate`` outcome)."""

    def __init__(self, handler: str) -> None:
        super().__init__(f"{handler}: already done (its inbox row exists)")
        self.handler = handler


class InboxUnavailable(SinkError):
    """The inbox's PostgreSQL could not be reached (or dropped the connection) during a
    transactional handler's run: nothing was committed, the callback is deferred."""
