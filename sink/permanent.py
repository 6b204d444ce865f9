"""Connection errors that waiting cannot fix: a refused login, an unknown vhost or database,
a TLS certificate not trusted.

A broker or Redis that is down (connection refused, reset, timed out) may come back, so
start-up retries it for ``SINK_STARTUP_TIMEOUT_S``. A wrong password, a virtual host that
does not exist or a Redis database number out of range is a setting to fix: retrying for a
minute only hides it. :func:`permanent` tells them apart, so that start-up fails at once
with one line naming the variable.
"""

from __future__ import annotations

import sys

from aiormq.exceptions import InvalidFrameError, ProbableAuthenticationError

from callback_sink.sink.tls import refusal


def permanent(exc: BaseException) -> str | None:
    """Why ``exc`` (or the error it wraps) will not go away by retrying; None when it may."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if (reason := _amqp(current) or _redis(current)) is not None:
            return reason
        current = current.__cause__ or current.__context__
    return refusal(exc)  # an untrusted certificate, a name mismatch: TLS settings to fix


def _amqp(exc: BaseException) -> str | None:
    if isinstance(exc, ProbableAuthenticationError) or "ACCESS_REFUSED" in str(exc):
        return "login refused (ACCESS_REFUSED): check the user and password"
    # aiormq reports a Connection.Close answered to Connection.Open this way: RabbitMQ's
    # NOT_ALLOWED for a virtual host that does not exist or the user may not use.
    text = str(exc)
    if isinstance(exc, InvalidFrameError) and "OpenOk" in text and "Connection.Close" in text:
        return "virtual host refused (NOT_ALLOWED): it does not exist or the user has no access"
    return None


def _redis(exc: BaseException) -> str | None:
    errors = sys.modules.get("redis.exceptions")  # loaded by any process that uses Redis
    if errors is None:
        return None
    if isinstance(exc, errors.AuthenticationError) or str(exc).startswith("WRONGPASS"):
        return "login refused (WRONGPASS / NOAUTH): check the user and password"
    if isinstance(exc, errors.ResponseError) and "DB index is out of range" in str(exc):
        return "database number out of range (see the server's `databases`)"
    return None
