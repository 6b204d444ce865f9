"""Facts: what one callback says about one group, in a form the store can merge.

A fact is keyed by (kind, subject): ``("member", "alice")``, ``("owner", "")``,
``("field", "maxusers")``. Each fact is stored with the timestamp and callId of the event
that stated it; the store keeps, per key, only the fact of the latest event, so that any
order and any number of deliveries of the same callbacks give the same directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Per-user facts (subject: the user id).
MEMBER = "member"  # belongs to the group (the owner too: see view.GroupView.members)
ADMIN = "admin"
MUTE = "mute"  # value: the mute's expiry in ms, when known
BLOCK = "block"  # the group's block list (black list)
ALLOW = "allow"  # the group's allow list (white list)
# Group-level facts (subject: "").
OWNER = "owner"  # value: the owner's user id
DESTROYED = "destroyed"
MUTED_ALL = "muted_all"  # whole-group mute
CHATROOM = "chatroom"
# Fields of the spec's group model (subject: the field name, value: its value).
FIELD = "field"

USER_KINDS = (MEMBER, ADMIN, MUTE, BLOCK, ALLOW)
#: The spec's group model fields the directory keeps.
MODEL_FIELDS = ("name", "description", "public", "membersonly", "allowinvites", "maxusers")
#: What a user loses when they leave a group (leave, kick, absence, block): later
#: re-joining starts afresh, as it does on Easemob.
LEAVING = (MEMBER, ADMIN, MUTE)


@dataclass(frozen=True)
class Fact:
    kind: str
    subject: str = ""
    present: bool = True
    value: Any = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)


def joined(user: str) -> list[Fact]:
    return [Fact(MEMBER, user)]


def left(user: str) -> list[Fact]:
    return [Fact(kind, user, present=False) for kind in LEAVING]


def blocked(user: str) -> list[Fact]:
    return [Fact(BLOCK, user), *left(user)]


def became_owner(user: str) -> list[Fact]:
    """The new owner: owner of the group, still a member, no longer an admin nor muted."""
    return [
        Fact(OWNER, "", value=user),
        Fact(MEMBER, user),
        Fact(ADMIN, user, present=False),
        Fact(MUTE, user, present=False),
    ]


def fields(values: dict[str, Any]) -> list[Fact]:
    return [Fact(FIELD, name, value=value) for name, value in values.items()]
