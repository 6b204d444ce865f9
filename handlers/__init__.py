"""The public handler API.

A handler is a plain typed ``async def`` taking an :class:`Event`, subscribed with
:func:`on` to event names (``muc:apply``), families (``muc``) or ``*``::

    from handlers import Event, on

    @on("muc:apply", "muc:invite")
    async def review(event: Event) -> None:
        ...

Raise :class:`Retry` to be called again later, :class:`PermanentError` to give up at once;
any other exception is retried with backoff and dead-lettered after the last attempt.
"""

from handlers.registry import Handler, Registry, load, on, on_shutdown
from sink.errors import PermanentError, Retry
from sink.events import Event

__all__ = [
    "Event", "Handler", "PermanentError", "Registry", "Retry", "load", "on", "on_shutdown",
]  # fmt: skip
