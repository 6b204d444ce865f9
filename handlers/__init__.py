"""The public handler API.

A handler is a plain typed ``async def`` taking an :class:`Event`, subscribed with
:func:`on` to event names (``muc:apply``), families (``muc``) or ``*``::

    from callback_sink.handlers import Event, on

    @on("muc:apply", "muc:invite")
    async def review(event: Event) -> None:
        ...

Raise :class:`Retry` to be called again later, :class:`PermanentError` to give up at once;
any other exception is retried with backoff and dead-lettered after the last attempt.
Per-handler options override the worker's settings::

    @on("message", timeout=5, retries=3, give_up_on=(ValueError,), concurrency=4)

``@on_startup`` / ``@on_shutdown`` mark module-level ``async def`` hooks run before the first
callback and after the last one (open and close pools there).

``@presend`` marks a pre-send moderation function, run by the ingress before Easemob delivers
a message a client sent; it returns a :class:`Verdict` (see :mod:`handlers.presend`).
"""

from callback_sink.handlers.presend import Verdict, presend
from callback_sink.handlers.registry import (
    Handler,
    Options,
    Registry,
    load,
    on,
    on_shutdown,
    on_startup,
)
from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.events import Event

__all__ = [
    "Event", "Handler", "Options", "PermanentError", "Registry", "Retry", "Verdict", "load",
    "on", "on_shutdown", "on_startup", "presend",
]  # fmt: skip
