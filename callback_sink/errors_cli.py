"""How ``callback-sink`` reports an expected failure: one line on stderr and an exit code.

Every command runs inside :func:`reported`, which turns the exceptions an operator can cause
(a broker or Redis that is down, a typo in a queue prefix or a group id, a file that is not
JSON, a closed port) into one line and exit code 1, so each command needs no error handling
of its own. A configuration error exits 2, as it always has, so scripts can tell "fix the
environment" from "the world is not as expected". ``--debug`` re-raises instead, for the
traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import aiohttp
import aiormq.exceptions
import orjson
import redis.exceptions

from callback_sink.sink.errors import ConfigError, SinkError, StartupError
from callback_sink.sink.permanent import permanent

#: Exit codes: a failure the operator can act on; a bad setting; Ctrl-C (128 + SIGINT).
FAILED, MISCONFIGURED, INTERRUPTED = 1, 2, 130


class Failure(SinkError):
    """An expected failure of a command (nothing found, refused input): one line, exit 1."""


def explain(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and the one line for an expected failure; ``None`` for a bug."""
    if isinstance(exc, ConfigError):
        return MISCONFIGURED, f"configuration error: {exc}"
    if isinstance(exc, StartupError):
        return FAILED, f"cannot start: {exc}"
    if isinstance(exc, SinkError):
        return FAILED, str(exc)
    if isinstance(exc, aiormq.exceptions.AMQPError) and (reason := permanent(exc)):
        return FAILED, f"RabbitMQ (SINK_AMQP_URL): {reason}"
    if isinstance(exc, redis.exceptions.RedisError) and (reason := permanent(exc)):
        return FAILED, f"Redis (SINK_DEDUP_URL): {reason}"
    if isinstance(exc, aiormq.exceptions.AMQPConnectionError | aiormq.exceptions.ChannelClosed):
        return FAILED, f"RabbitMQ (SINK_AMQP_URL) refused or unreachable: {exc}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return FAILED, f"Redis (SINK_DEDUP_URL) unreachable: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return FAILED, f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or exc}"
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return FAILED, f"HTTP request failed: {type(exc).__name__} {exc}".rstrip()
    if isinstance(exc, orjson.JSONDecodeError):
        return FAILED, f"not valid JSON: {exc}"
    if isinstance(exc, KeyError):
        return FAILED, f"the document has no {exc.args[0]!r} field"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return FAILED, f"{exc.strerror or exc}{where}"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    return None


def reported(run: Callable[[], int], *, debug: bool) -> int:
    """Run a command; an expected failure becomes one line on stderr and its exit code."""
    if not debug:  # the AMQP client's own warnings would be more lines; our logs say it
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return run()
    except (Exception, KeyboardInterrupt) as exc:
        explained = explain(exc)
        if debug or explained is None:
            raise
        code, line = explained
        print(f"callback-sink: {_one_line(line)}", file=sys.stderr)
        return code


def _one_line(text: str) -> str:
    return " ".join(text.split())
