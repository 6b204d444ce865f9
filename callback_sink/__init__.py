"""callback-sink: a durable receiver for Easemob / Agora Chat IM server callbacks.

This is the one public import root. Everything a handler author needs is here::

    from callback_sink import Event, PermanentError, Retry, on

    @on("muc:apply", "muc:invite")
    async def review(event: Event) -> None:
        ...

and the developer kit is :mod:`callback_sink.testing`. The sub-packages
(``callback_sink.sink``, ``.ingress``, ``.worker``, ``.handlers``, ``.easemob``) are the
implementation; their modules may change between releases.
"""

from callback_sink.handlers.presend import Verdict, presend
from callback_sink.handlers.registry import on, on_shutdown, on_startup
from callback_sink.sink.errors import PermanentError, Retry
from callback_sink.sink.events import Event
from callback_sink.sink.logs import get as get_logger

__all__ = [
    "Event", "PermanentError", "Retry", "Verdict", "get_logger", "on", "on_shutdown",
    "on_startup", "presend",
]  # fmt: skip
