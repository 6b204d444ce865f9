"""Built-in handler: one ``event.received`` log line for every callback (on by default)."""

from __future__ import annotations

from callback_sink.handlers.registry import on
from callback_sink.sink import logs
from callback_sink.sink.events import Event

log = logs.get("handlers.log")


@on("*", name="handlers.log.log_event")
async def log_event(event: Event) -> None:
    """Log what arrived: enough to follow a group's history from the logs alone."""
    log.info(
        "event.received",
        operation=event.operation,
        group_id=event.group_id,
        is_chatroom=event.is_chatroom,
        from_=event.from_,
        to=event.to,
        sent_at_ms=event.timestamp,
    )
