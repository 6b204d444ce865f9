"""The one exception tree of callback-sink.

Exceptions that steer control flow carry their data: :class:`Retry` carries the delay a
handler asks for, :class:`Rejected` the HTTP status and the reason the ingress logs.
"""

from __future__ import annotations


class SinkError(Exception):
    """Base of every error raised on purpose by callback-sink."""


class ConfigError(SinkError):
    """A setting is missing or malformed; start-up stops with this message."""


class HandlerLoadError(ConfigError):
    """A handler module cannot be imported or subscribes to an unknown event name."""


class Rejected(SinkError):
    """The ingress refuses a callback: ``status`` is the HTTP answer, ``reason`` is logged."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        super().__init__(message)
        self.delay = delay


class PermanentError(HandlerError):
    """Raise from a handler when retrying cannot help: the callback is dead-lettered at once."""
