"""callback-sink: a durable receiver for Easemob / Agora Chat IM server callbacks.

This is the one public import root. Everything a handler author needs is here::

    from callback_sink import Event, PermanentError, Retry, on

    @on("muc:apply", "muc:invite")
    async def review(event: Event) -> None:
        ...

A handler whose writes go to PostgreSQL can have them committed together with its done mark
(exactly-once effects in that database; docs/howto/transactional-handlers.md)::

    @on("muc:kick", transactional=True)
    async def record_kick(event: Event, tx: Transaction) -> None:
        await tx.execute(...)

and the developer kit is :mod:`callback_sink.testing`. The sub-packages
(``callback_sink.sink``, ``.ingress``, ``.worker``, ``.handlers``, ``.easemob``) are the
implementation; their modules may change between releases.
"""

from typing import TYPE_CHECKING, Any

from callback_sink.handlers.presend import Verdict, presend
from callback_sink.handlers.registry import on, on_shutdown, on_startup
from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.events import Event
from callback_sink.sink.logs import get as get_logger

if TYPE_CHECKING:
    from callback_sink.handlers.transactional import Transaction

__all__ = [
    "Event", "PermanentError", "Retry", "Transaction", "Verdict", "get_logger", "on",
    "on_shutdown", "on_startup", "presend",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    """``Transaction`` is imported on first use: SQLAlchemy is not loaded by every command."""
    if name == "Transaction":
        from callback_sink.handlers.transactional import Transaction

        return Transaction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
