"""What the directory knows about one group, folded from its latest facts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from callback_sink.handlers.directory import facts as f


@dataclass(frozen=True)
class Row:
    """One stored fact: the latest one for its (kind, subject), with its event's time."""

    kind: str
    subject: str
    present: bool
    value: Any
    timestamp: int


@dataclass(frozen=True)
class MutedMember:
    user: str
    #: When the mute ends, ms since the epoch; None when no callback or lookup told it.
    expire: int | None


@dataclass(frozen=True)
class GroupView:
    """One group or chat room as the directory knows it. User lists are sorted.

    ``members`` leaves the owner out (the owner is ``owner``), as the spec's member list
    does with its ``owner`` entry. Model fields are None until a callback or a REST lookup
    told them. A destroyed group keeps what was last known about it.
    """

    group_id: str
    is_chatroom: bool
    destroyed: bool
    owner: str | None
    admins: tuple[str, ...]
    members: tuple[str, ...]
    mutes: tuple[MutedMember, ...]
    blocked: tuple[str, ...]
    allowed: tuple[str, ...]
    muted_all: bool
    name: str | None
    description: str | None
    public: bool | None
    membersonly: bool | None
    allowinvites: bool | None
    maxusers: int | None
    #: Timestamp (ms) of the latest event that set something about this group.
    updated_at: int

    def muted(self, now_ms: int) -> tuple[MutedMember, ...]:
        """The mutes still in force at ``now_ms`` (Easemob lifts expired ones silently)."""
        return tuple(m for m in self.mutes if m.expire is None or m.expire > now_ms)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``callback-sink groups show --json``)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["mutes"] = [{"user": m.user, "expire": m.expire} for m in self.mutes]
        for key in ("admins", "members", "blocked", "allowed"):
            data[key] = list(data[key])
        return data


def fold(group_id: str, rows: Iterable[Row]) -> GroupView:
    """The view of one group from its stored rows."""
    present: dict[str, dict[str, Any]] = {kind: {} for kind in (*f.USER_KINDS, f.FIELD)}
    group: dict[str, Row] = {}
    updated_at = 0
    for row in rows:
        updated_at = max(updated_at, row.timestamp)
        if row.kind in present:
            if row.present:
                present[row.kind][row.subject] = row.value
        else:
            group[row.kind] = row
    owner_row = group.get(f.OWNER)
    owner = str(owner_row.value) if owner_row and owner_row.present else None
    model = present[f.FIELD]

    def flag(kind: str) -> bool:
        return kind in group and group[kind].present

    def users(kind: str) -> tuple[str, ...]:
        return tuple(sorted(present[kind]))

    return GroupView(
        group_id=group_id,
        is_chatroom=flag(f.CHATROOM),
        destroyed=flag(f.DESTROYED),
        owner=owner,
        admins=users(f.ADMIN),
        members=tuple(u for u in users(f.MEMBER) if u != owner),
        mutes=tuple(MutedMember(u, present[f.MUTE][u]) for u in users(f.MUTE)),
        blocked=users(f.BLOCK),
        allowed=users(f.ALLOW),
        muted_all=flag(f.MUTED_ALL),
        name=model.get("name"),
        description=model.get("description"),
        public=model.get("public"),
        membersonly=model.get("membersonly"),
        allowinvites=model.get("allowinvites"),
        maxusers=model.get("maxusers"),
        updated_at=updated_at,
    )
