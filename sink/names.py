"""Event names: what handlers subscribe to, and the routing keys derived from them.

A name is ``family:kind`` (``muc:apply``, ``roster:add``); a family name alone (``muc``)
subscribes to every event of that family and ``*`` to everything. The set is closed, so a
typo in ``@on(...)`` fails at import time, except for ``group_op``: Easemob adds new-format
operations without notice, so any ``group_op:<lowercase word>`` is accepted.
"""

from __future__ import annotations

import re

ALL = "*"
UNKNOWN = "unknown"

#: The 33 legacy group and chat-room operations, spelled as Easemob sends them
#: (``assing_owner`` is Easemob's own spelling).
MUC_OPERATIONS: tuple[str, ...] = (
    "create", "destroy", "apply", "apply_accept", "invite", "invite_accept", "invite_decline",
    "kick", "ban", "allow", "update", "block", "unblock", "presence", "absence",
    "direct_joined", "leave", "assing_owner", "add_admin", "remove_admin", "add_mute",
    "remove_mute", "update_announcement", "delete_announcement", "upload_file", "delete_file",
    "add_user_white_list", "remove_user_white_list", "ban_group", "remove_ban_group",
    "set_metadata", "delete_metadata", "group_member_metadata_update",
)  # fmt: skip

ROSTER_OPERATIONS: tuple[str, ...] = (
    "add", "accept", "remote_accept", "decline", "remote_decline", "remove", "ban", "allow",
)  # fmt: skip

#: Kinds of each family. ``unknown`` is every family's catch-all for a value nobody knows.
FAMILIES: dict[str, tuple[str, ...]] = {
    "muc": (*MUC_OPERATIONS, UNKNOWN),
    "group_op": (UNKNOWN,),  # open: see GROUP_OP_KIND
    "message": ("chat", "groupchat", UNKNOWN),
    "offline": ("chat", "groupchat", UNKNOWN),
    "roster": (*ROSTER_OPERATIONS, UNKNOWN),
    "recall": ("message",),
    "receipt": ("read_ack", "channel_ack"),
    "notify": ("reaction", "thread", UNKNOWN),
    "session": ("login", "logout", "replaced", UNKNOWN),
    # Not an Easemob callback: the ingress's record of a pre-send callback and its answer.
    "presend": ("verdict",),
}

GROUP_OP_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

KNOWN_NAMES: frozenset[str] = frozenset(
    {f"{family}:{kind}" for family, kinds in FAMILIES.items() for kind in kinds} | {UNKNOWN}
)


def name_of(family: str, kind: str | None) -> str:
    """The event name for a family and a raw kind; unknown kinds map to ``family:unknown``."""
    if family == UNKNOWN:
        return UNKNOWN
    value = (kind or "").lower()
    if family == "group_op":
        return f"group_op:{value}" if GROUP_OP_KIND.match(value) else "group_op:unknown"
    return f"{family}:{value}" if value in FAMILIES[family] else f"{family}:{UNKNOWN}"


def is_subscribable(name: str) -> bool:
    """True for ``*``, a family, a known event name, or any well-formed ``group_op:`` name."""
    if name == ALL or name in FAMILIES or name in KNOWN_NAMES:
        return True
    family, _, kind = name.partition(":")
    return family == "group_op" and bool(GROUP_OP_KIND.match(kind))


def matches(subscription: str, name: str) -> bool:
    """Does a handler subscribed to ``subscription`` receive an event called ``name``?"""
    if subscription in (ALL, name):
        return True
    return ":" not in subscription and name.partition(":")[0] == subscription


def routing_key(name: str) -> str:
    """AMQP topic routing key for an event name: ``muc:apply`` becomes ``muc.apply``."""
    return name.replace(":", ".")
