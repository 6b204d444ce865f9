"""Typed results of the group REST API, parsed once from Easemob's ``data`` field.

Easemob spells numbers and booleans loosely (``"last_modified": "1441021038124"``), so every
parser here coerces; fields Easemob may leave out have defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Token:
    """An app token: ``expires_in`` seconds from when it was issued."""

    access_token: str = field(repr=False)
    expires_in: int
    application: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Token:
        return cls(
            access_token=str(body["access_token"]),
            expires_in=int(body.get("expires_in", 0)),
            application=str(body.get("application", "")),
        )


@dataclass(frozen=True)
class GroupSummary:
    """One group of the app-wide list (``GET /chatgroups``)."""

    group_id: str
    name: str
    owner: str
    affiliations: int
    type: str = "group"
    last_modified: int = 0

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> GroupSummary:
        return cls(
            group_id=str(item["groupid"]),
            name=str(item.get("groupname", "")),
            owner=str(item.get("owner", "")),
            affiliations=int(item.get("affiliations", 0)),
            type=str(item.get("type", "group")),
            last_modified=int(item.get("last_modified", 0) or 0),
        )


@dataclass(frozen=True)
class GroupPage:
    """One page of the app-wide list; ``cursor`` is None on the last page."""

    groups: tuple[GroupSummary, ...]
    cursor: str | None


@dataclass(frozen=True)
class JoinedGroup:
    """One group a user belongs to (``GET /users/{user}/joined_chatgroups``)."""

    group_id: str
    name: str

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> JoinedGroup:
        return cls(group_id=str(item["groupid"]), name=str(item.get("groupname", "")))


@dataclass(frozen=True)
class GroupDetails:
    """The spec's group model, plus the owner and members read from ``affiliations``."""

    group_id: str
    name: str
    description: str
    public: bool
    membersonly: bool
    allowinvites: bool
    maxusers: int
    owner: str
    members: tuple[str, ...]
    affiliations_count: int
    invite_need_confirm: bool = True
    created: int = 0

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> GroupDetails:
        owner = ""
        members: list[str] = []
        for affiliation in item.get("affiliations", ()):
            if "owner" in affiliation:
                owner = str(affiliation["owner"])
            elif "member" in affiliation:
                members.append(str(affiliation["member"]))
        return cls(
            group_id=str(item["id"]),
            name=str(item.get("name", "")),
            description=str(item.get("description", "")),
            public=as_bool(item.get("public", False)),
            membersonly=as_bool(item.get("membersonly", False)),
            allowinvites=as_bool(item.get("allowinvites", False)),
            maxusers=int(item.get("maxusers", 0)),
            owner=owner,
            members=tuple(members),
            affiliations_count=int(item.get("affiliations_count", len(members) + bool(owner))),
            invite_need_confirm=as_bool(item.get("invite_need_confirm", True)),
            created=int(item.get("created", 0) or 0),
        )


@dataclass(frozen=True)
class GroupDetailsBatch:
    """Details of several groups: the ones found, and the ids Easemob says do not exist."""

    found: tuple[GroupDetails, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True)
class NewGroup:
    """What ``POST /chatgroups`` needs. ``members`` excludes the owner."""

    name: str
    owner: str
    description: str = ""
    public: bool = True
    maxusers: int = 200
    membersonly: bool = False
    allowinvites: bool = False
    members: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "groupname": self.name,
            "desc": self.description,
            "public": self.public,
            "maxusers": self.maxusers,
            "members_only": self.membersonly,
            "allowinvites": self.allowinvites,
            "owner": self.owner,
        }
        if self.members:
            body["members"] = list(self.members)
        return body


@dataclass(frozen=True)
class Member:
    """One entry of the member list: ``role`` is ``owner`` or ``member``."""

    user: str
    role: str

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Member:
        for role in ("owner", "member"):
            if role in item:
                return cls(user=str(item[role]), role=role)
        raise ValueError(f"not a member entry: {dict(item)}")


@dataclass(frozen=True)
class UserResult:
    """What Easemob says about one user of a (batch) call: ``ok`` is its ``result``,
    ``reason`` why not, ``expire`` the end of a mute (ms since the epoch)."""

    user: str
    ok: bool
    reason: str = ""
    expire: int | None = None

    @classmethod
    def parse(cls, item: Mapping[str, Any], user: str | None = None) -> UserResult:
        expire = item.get("expire")
        return cls(
            user=str(item.get("user", user or "")),
            ok=as_bool(item.get("result", True)),
            reason=str(item.get("reason", "")),
            expire=None if expire is None else int(expire),
        )


@dataclass(frozen=True)
class Mute:
    """A muted user and when the mute ends (ms since the epoch)."""

    user: str
    expire: int

    @classmethod
    def parse(cls, item: Mapping[str, Any]) -> Mute:
        return cls(user=str(item["user"]), expire=int(item["expire"]))


def as_bool(value: object) -> bool:
    """Easemob sends booleans as JSON booleans or as the strings ``"true"`` / ``"false"``."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)
