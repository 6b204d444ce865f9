"""Logging: structlog, one JSON object per line on stdout (or coloured lines for people).

Per-callback context (``call_id``, ``event``) is bound with ``bound_contextvars`` by the
ingress and the worker. A last processor redacts any field whose name says it holds a
secret, so a careless ``log.info(..., security=...)`` cannot leak one.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

REDACTED = "[redacted]"
#: Field names whose values are never written out.
SECRET_FIELDS = frozenset(
    {"security", "secret", "secrets", "client_secret", "password", "token", "access_token"}
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in SECRET_FIELDS.intersection(event_dict):
        event_dict[key] = REDACTED
    return event_dict


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(log_format: str = "json", level: str = "info") -> None:
    """Configure structlog for the whole process; call once at start-up."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # No file given: each logger writes to whatever sys.stdout is when it is made, so a
        # replaced (or, in tests, captured and closed) stdout is never written to later.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> Any:
    """A logger tagged with the component that writes through it."""
    return structlog.get_logger(component=name)
