"""A handler module for the traceback tests: ``member_role`` fails inside a nested helper.

``muc:apply`` callbacks reach :func:`member_role`, which asks :func:`role_of` for the
applicant's role in an empty roster: a ``KeyError`` two frames below the handler, on the line
marked ``# the failing line``. The callback carries a secret-looking value the handler holds
in a local variable; no log line and no dead letter may show it.
"""

from __future__ import annotations

from callback_sink.handlers import Event, on

#: A value held in the failing frames' locals; it must never be rendered.
LOCAL_SECRET = "do-not-log-this-0c5e"


def role_of(roster: dict[str, str], user: str | None) -> str:
    token = LOCAL_SECRET  # noqa: F841 - a local the traceback must not render
    return roster[user or "?"]  # the failing line


@on("muc:apply", name="tests.lookups.member_role")
async def member_role(event: Event) -> None:
    role_of({}, event.from_)
