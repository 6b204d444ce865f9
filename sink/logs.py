"""Logging: structlog, one JSON object per line on stdout (or coloured lines for people).

The JSON line is rendered by orjson straight to bytes and written to ``sys.stdout.buffer``;
loggers are cached on first use, so a log call costs one pass through the processors and
one write. Per-callback context (``call_id``, ``event_name``) is passed as fields on the
ingress's hot path and bound by the worker (``bind_contextvars``, reset by token). A last
processor redacts any field whose name says it holds a secret, so a careless
``log.info(..., security=...)`` cannot leak one.

A failure line passes ``exc_info=error``; :func:`traceback_of` renders it into the
``exception`` field (JSON), printed under the line by the console renderer: the usual
``Traceback (most recent call last)`` text, bounded (:data:`TRACEBACK_FRAMES`,
:data:`TRACEBACK_CHARS`) and without the frames' local variables, which may hold a
callback's body or a secret.
"""

from __future__ import annotations

import datetime
import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

REDACTED = "[redacted]"
#: Field names whose values are never written out.
SECRET_FIELDS = frozenset(
    {"security", "secret", "secrets", "client_secret", "password", "token", "access_token"}
)


#: A failure line's traceback keeps the last frames of each exception of the chain (the
#: handler's own code is nearest the error; a deep framework stack above it is noise) ...
TRACEBACK_FRAMES = 30
#: ... and at most its last characters, so that one failure is one line of bounded size.
TRACEBACK_CHARS = 8192
#: A dead letter's ``x-sink-traceback`` header keeps the last characters of the same text:
#: enough for the frames nearest the error, while a queue of dead letters stays small.
TRACEBACK_HEADER_CHARS = 4096


def traceback_of(error: BaseException, limit: int = TRACEBACK_CHARS) -> str:
    """``error``'s formatted traceback (its chained causes included), bounded: the last
    :data:`TRACEBACK_FRAMES` frames of each exception, then the last ``limit`` characters.
    Only file names, line numbers, function names and source lines: never local values."""
    text = "".join(
        traceback.format_exception(type(error), error, error.__traceback__, limit=-TRACEBACK_FRAMES)
    ).rstrip("\n")
    if len(text) <= limit:
        return text
    marker = f"[{len(text) - limit} characters cut]\n"
    return marker + text[len(text) - limit + len(marker) :]


def _render_exception(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``exc_info`` (an exception, ``True`` for the one being handled) becomes the
    ``exception`` field: :func:`traceback_of` it."""
    exc_info = event_dict.pop("exc_info", None)
    error: BaseException | None = None
    if isinstance(exc_info, BaseException):
        error = exc_info
    elif isinstance(exc_info, tuple):
        error = exc_info[1]
    elif exc_info:
        error = sys.exception()
    if error is not None:
        event_dict["exception"] = traceback_of(error)
    return event_dict


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_FIELDS.intersection(event_dict):
        event_dict[key] = REDACTED
    return event_dict


def _dumps(obj: Any, default: Any = None) -> bytes:
    return orjson.dumps(obj, default=default or str)


class StdoutBytesLogger:
    """Writes each rendered line to whatever ``sys.stdout`` is *at write time*: a cached
    logger must never hold on to a stream that was replaced (or, in tests, captured and
    closed) after it was made."""

    def msg(self, message: bytes | str) -> None:
        stream = sys.stdout
        if isinstance(message, str):
            stream.write(message + "\n")
        else:
            buffer = getattr(stream, "buffer", None)
            if buffer is None:
                stream.write(message.decode() + "\n")
            else:
                buffer.write(message + b"\n")
        stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def _logger_factory(*_: Any) -> StdoutBytesLogger:
    return StdoutBytesLogger()


#: One list for the life of the process, changed in place by :func:`configure`: cached
#: loggers hold a reference to it, so a second ``configure`` (the CLI after the tests' own,
#: say) and ``structlog.testing.capture_logs`` reach every logger.
_PROCESSORS: list[Any] = []


#: The JSON renderer :func:`configure` installed last, and the least level it lets through:
#: a :class:`HotLine` renders itself only while that renderer ends the chain.
_JSON: dict[str, Any] = {"renderer": None, "level": logging.INFO}


def configure(log_format: str = "json", level: str = "info") -> None:
    """Configure structlog for the whole process; call once at start-up."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    _JSON["renderer"] = None if log_format == "console" else renderer
    _JSON["level"] = logging.getLevelNamesMapping()[level.upper()]
    _PROCESSORS[:] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render_exception,
        _redact,
        renderer,
    ]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=True,
    )


def get(name: str) -> Any:
    """A logger tagged with the component that writes through it."""
    return structlog.get_logger(component=name)


_STDOUT = StdoutBytesLogger()
_UTC = datetime.UTC


class HotLine:
    """One info line written per callback on a hot path (``callback.accepted``), rendered in
    one step: the line :func:`get`'s logger would write, byte for byte bar the time stamp
    (the same fields in the same order: component, the fields, event, the bound context,
    level, timestamp; secret-named fields redacted), without structlog's per-call machinery
    and its six processor calls (about 2 µs of the 5.5 a line costs). While the chain is not
    the JSON one :func:`configure` built (the console format, ``capture_logs`` in a test),
    it goes through the logger as any line. No ``exc_info``: a failure is never hot."""

    def __init__(self, component: str, event: str) -> None:
        self.component = component
        self.event = event
        self._log = get(component)

    def __call__(self, **fields: Any) -> None:
        renderer = _JSON["renderer"]
        if renderer is None or not _PROCESSORS or _PROCESSORS[-1] is not renderer:
            self._log.info(self.event, **fields)
            return
        if _JSON["level"] > logging.INFO:
            return
        line = {"component": self.component, **fields, "event": self.event}
        structlog.contextvars.merge_contextvars(None, "info", line)
        line["level"] = "info"
        line["timestamp"] = datetime.datetime.now(_UTC).isoformat().replace("+00:00", "Z")
        _redact(None, "info", line)
        _STDOUT.msg(renderer(None, "info", line))
