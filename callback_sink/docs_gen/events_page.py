"""``docs/reference/events.md``: every event name handlers can subscribe to, by family.

The names come from :mod:`callback_sink.sink.names` (the closed set ``@on(...)`` checks at
import time); what marks a callback as a member of each family is described in
:data:`RECOGNISED_BY`, which a test keeps in step with the families of the code.
"""

from __future__ import annotations

from callback_sink.docs_gen.markdown import HEADER, cell
from callback_sink.sink import names

#: How the decoder (``callback_sink.sink.events``) tells each family's callbacks apart, and
#: what the family is for.
RECOGNISED_BY: dict[str, tuple[str, str]] = {
    "muc": ("the legacy group and chat-room events", "`chat_type` `muc`; `payload.operation`"),
    "group_op": (
        "new-format group events: `group_op:` + the lower-cased `operation`; Easemob adds "
        "values without notice, so any lower-case word is accepted",
        "`event` `group_op_event`",
    ),
    "message": ("delivered messages", "`chat_type` `chat`/`groupchat`, `eventType` `chat`"),
    "offline": ("offline messages, one per offline recipient", "`eventType` `chat_offline`"),
    "roster": ("contacts", "`chat_type` `roster`; `payload.operation`"),
    "recall": ("a recalled message", "`chat_type` `recall`"),
    "receipt": ("read receipts", "`chat_type` `read_ack` / `channel_ack`"),
    "notify": ("reactions and threads", "`chat_type` `notify`; `payload.type`"),
    "session": ("logins and logouts", "no `chat_type`, no `eventType`; `reason`"),
    "presend": (
        "the ingress's record of a pre-send callback and the verdict it answered "
        "(see [Pre-send moderation](../howto/presend.md))",
        "the key `presend_verdict` (which the ingress refuses in anything Easemob posts)",
    ),
}


def markdown() -> str:
    known = sum(1 for n in names.KNOWN_NAMES if not n.endswith(f":{names.UNKNOWN}"))
    out = [
        "# Event names",
        "",
        HEADER,
        "",
        "Each callback is decoded once into an `Event` and gets a **name**; handlers subscribe "
        f"to names, to a whole **family** (the part before the colon) or to `{names.ALL}` "
        "(everything). Names are checked when your module is imported, so a typo fails at "
        f"start-up, naming it. {known} names in {len(names.FAMILIES)} families:",
        "",
        "| family | what | names | recognised by |",
        "|---|---|---|---|",
    ]
    for family, kinds in names.FAMILIES.items():
        what, recognised = RECOGNISED_BY[family]
        listed = [f"`{family}:{k}`" for k in kinds if k != names.UNKNOWN]
        if family == "group_op":
            listed = ["`group_op:<operation>` (`group_op:create`, `group_op:join`, …)"]
        out.append(f"| `{family}` | {cell(what)} | {', '.join(listed)} | {cell(recognised)} |")
    out += [
        f"| — | any other correctly signed shape | `{names.UNKNOWN}` | |",
        "",
        f"Every family also has `<family>:{names.UNKNOWN}` for a value nobody knows yet (an "
        "operation Easemob added last week). Such callbacks are **accepted and delivered**, "
        "never refused: losing one is worse than not understanding it. The raw value stays in "
        "`event.operation` and the whole document in `event.raw`.",
        "",
        "The routing key of each message on the exchange is the name with `.` for `:` "
        f"(`{names.routing_key('muc:apply')}`), so other consumers can bind their own queues to "
        "just the events they want.",
    ]
    return "\n".join(out) + "\n"
