"""The emulator's in-memory app: groups and the rules Easemob enforces on them.

Every operation either raises :class:`EasemobError` (rendered as Easemob's error body) or
changes the state and returns the :class:`Change` list the callbacks are made from. The
rules are chosen so that each change is exactly what its callbacks say (see
docs/reference/emulator.md, its table of callbacks sent): a directory fed the callbacks can
rebuild this state, which is what the property tests check.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callback_sink.easemob.api import UPDATABLE
from callback_sink.easemob.emulator import checks
from callback_sink.easemob.emulator.checks import bad_request, forbidden, not_found


@dataclass(frozen=True)
class Change:
    """One fact worth a callback: a legacy ``muc`` operation on a group, and its user."""

    operation: str
    group_id: str
    user: str | None = None
    #: Who did it, when the callback names them (the old owner of ``assing_owner``).
    actor: str | None = None


@dataclass
class Group:
    """A group as the emulator keeps it (mutable; the client reads it as ``GroupDetails``)."""

    group_id: str
    owner: str
    name: str
    description: str
    maxusers: int
    public: bool
    membersonly: bool
    allowinvites: bool
    created: int
    last_modified: int
    # Ordered sets (dicts with None values) so that listings keep insertion order.
    members: dict[str, None] = field(default_factory=dict)  # without the owner
    admins: dict[str, None] = field(default_factory=dict)
    blocks: dict[str, None] = field(default_factory=dict)
    mutes: dict[str, int] = field(default_factory=dict)  # user → expiry, ms

    @property
    def size(self) -> int:
        return 1 + len(self.members)

    def is_member(self, user: str) -> bool:
        return user == self.owner or user in self.members

    def drop(self, user: str) -> None:
        """A user leaves: membership, admin role and mute go with them."""
        self.members.pop(user, None)
        self.admins.pop(user, None)
        self.mutes.pop(user, None)

    def details(self) -> dict[str, Any]:
        """The spec's group model, as ``GET /chatgroups/{id}`` shows it."""
        affiliations = [{"owner": self.owner}] + [{"member": m} for m in self.members]
        return {
            "id": self.group_id,
            "name": self.name,
            "description": self.description,
            "public": self.public,
            "membersonly": self.membersonly,
            "allowinvites": self.allowinvites,
            "maxusers": self.maxusers,
            "created": self.created,
            "invite_need_confirm": True,
            "affiliations_count": len(affiliations),
            "affiliations": affiliations,
        }


class AppState:
    """All groups of one app. ``now`` gives wall-clock milliseconds (mute expiries)."""

    def __init__(self, now: Callable[[], int], rng: random.Random) -> None:
        self.now = now
        self.groups: dict[str, Group] = {}
        self.destroyed: set[str] = set()
        # Group ids look like Easemob's (15 digits) and start at a random point, so that
        # two emulator runs never hand out the same id to one directory.
        self._next_id = rng.randrange(10**14, 9 * 10**14)

    def group(self, group_id: str) -> Group:
        try:
            return self.groups[group_id]
        except KeyError:
            raise not_found(group_id) from None

    def _touch(self, group: Group) -> None:
        group.last_modified = self.now()

    # --- groups ---------------------------------------------------------------------------

    def create(self, body: Mapping[str, Any]) -> tuple[str, list[Change]]:
        for required in ("groupname", "desc", "public", "owner"):
            if required not in body:
                raise bad_request(f"{required} is required")
        owner = checks.user(body["owner"], "owner")
        maxusers = checks.integer(body.get("maxusers", 200), "maxusers", minimum=1)
        members = checks.users(body["members"], "members") if "members" in body else []
        if "members" in body and not members:
            raise bad_request("members, when given, must name at least one user")
        members = [m for m in dict.fromkeys(members) if m != owner]
        if 1 + len(members) > maxusers:
            raise bad_request(f"members exceed maxusers {maxusers}")
        group_id = str(self._next_id)
        self._next_id += 1
        now = self.now()
        group = Group(
            group_id=group_id,
            name=checks.text(body["groupname"], "groupname"),
            description=checks.text(body["desc"], "desc"),
            public=checks.boolean(body["public"], "public"),
            membersonly=checks.boolean(body.get("members_only", False), "members_only"),
            allowinvites=checks.boolean(body.get("allowinvites", False), "allowinvites"),
            maxusers=maxusers,
            owner=owner,
            created=now,
            last_modified=now,
            members=dict.fromkeys(members),
        )
        self.groups[group_id] = group
        changes = [Change("create", group_id, owner)]
        changes += [Change("presence", group_id, m) for m in members]
        return group_id, changes

    def update(
        self, group_id: str, body: Mapping[str, Any]
    ) -> tuple[dict[str, bool], list[Change]]:
        group = self.group(group_id)
        unknown = set(body) - set(UPDATABLE)
        if unknown or not body:
            raise bad_request(f"only {', '.join(sorted(UPDATABLE))} can be updated, "
                              f"not {', '.join(sorted(unknown)) or 'nothing'}")  # fmt: skip
        if "maxusers" in body:
            maxusers = checks.integer(body["maxusers"], "maxusers", minimum=1)
            if maxusers < group.size:
                raise bad_request(f"maxusers {maxusers} is below the member count {group.size}")
            group.maxusers = maxusers
        if "groupname" in body:
            group.name = checks.text(body["groupname"], "groupname", slash=False)
        if "description" in body:
            group.description = checks.text(body["description"], "description", slash=False)
        self._touch(group)
        return {key: True for key in body}, [Change("update", group_id, group.owner)]

    def transfer(self, group_id: str, new_owner: object) -> list[Change]:
        group = self.group(group_id)
        user = checks.user(new_owner, "newowner")
        if user == group.owner:
            raise forbidden(f"{user} is already the owner of group {group_id}")
        if user not in group.members:
            raise forbidden(f"{user} is not a member of group {group_id}")
        old = group.owner
        group.drop(user)
        group.owner = user
        group.members[old] = None
        self._touch(group)
        return [Change("assing_owner", group_id, user, actor=old)]

    def delete(self, group_id: str) -> list[Change]:
        group = self.group(group_id)
        del self.groups[group_id]
        self.destroyed.add(group_id)
        return [Change("destroy", group_id, group.owner)]

    def page(self, limit: int, cursor: str | None) -> tuple[list[Group], str | None]:
        """The app's groups in creation order, ``limit`` at a time, with an opaque cursor."""
        start = checks.decode_cursor(cursor)
        groups = list(self.groups.values())
        chunk = groups[start : start + limit]
        end = start + len(chunk)
        return chunk, (checks.encode_cursor(end) if end < len(groups) else None)

    def joined(self, user: str) -> list[Group]:
        return [g for g in self.groups.values() if g.is_member(user)]

    # --- members --------------------------------------------------------------------------

    def members(self, group_id: str, pagenum: int, pagesize: int) -> list[dict[str, str]]:
        group = self.group(group_id)
        everyone = [{"owner": group.owner}] + [{"member": m} for m in group.members]
        start = (max(pagenum, 1) - 1) * pagesize
        return everyone[start : start + pagesize]

    def _refuse_join(self, group: Group, user: str) -> str | None:
        if group.is_member(user):
            return f"user {user} is already a member of group {group.group_id}"
        if user in group.blocks:
            return f"user {user} is in the block list of group {group.group_id}"
        if group.size >= group.maxusers:
            return f"group {group.group_id} is full ({group.maxusers} members)"
        return None

    def add_member(self, group_id: str, user: str) -> list[Change]:
        group = self.group(group_id)
        refusal = self._refuse_join(group, user)
        if refusal:
            raise forbidden(refusal)
        group.members[user] = None
        self._touch(group)
        return [Change("presence", group_id, user)]

    def add_members(self, group_id: str, users: object) -> tuple[list[str], list[Change]]:
        group = self.group(group_id)
        added = []
        for user in dict.fromkeys(checks.batch(users)):
            if self._refuse_join(group, user) is None:
                group.members[user] = None
                added.append(user)
        if not added:
            raise forbidden(f"none of the users can join group {group_id}")
        self._touch(group)
        return added, [Change("presence", group_id, u) for u in added]

    def remove_member(self, group_id: str, user: str) -> tuple[str, list[Change]]:
        """Remove one member; ``(reason, changes)`` with an empty reason on success."""
        group = self.group(group_id)
        if user == group.owner:
            return f"user {user} is the owner of group {group_id}", []
        if user not in group.members:
            return f"user {user} is not a member of group {group_id}", []
        group.drop(user)
        self._touch(group)
        return "", [Change("kick", group_id, user), Change("absence", group_id, user)]

    # --- admins ---------------------------------------------------------------------------

    def add_admin(self, group_id: str, user: object) -> list[Change]:
        group = self.group(group_id)
        name = checks.user(user, "newadmin")
        if name not in group.members:
            raise forbidden(f"{name} is not an ordinary member of group {group_id}")
        if name in group.admins:
            raise forbidden(f"{name} is already an admin of group {group_id}")
        group.admins[name] = None
        self._touch(group)
        return [Change("add_admin", group_id, name)]

    def remove_admin(self, group_id: str, user: str) -> list[Change]:
        group = self.group(group_id)
        if user not in group.admins:
            raise forbidden(f"{user} is not an admin of group {group_id}")
        del group.admins[user]
        self._touch(group)
        return [Change("remove_admin", group_id, user)]

    # --- block list -----------------------------------------------------------------------

    def block(self, group_id: str, user: str) -> tuple[str, list[Change]]:
        group = self.group(group_id)
        if user == group.owner:
            return f"the owner of group {group_id} cannot be blocked", []
        if user in group.blocks:
            return f"user {user} is already blocked in group {group_id}", []
        was_member = user in group.members
        group.drop(user)
        group.blocks[user] = None
        self._touch(group)
        changes = [Change("ban", group_id, user)]
        if was_member:
            changes.append(Change("absence", group_id, user))
        return "", changes

    def unblock(self, group_id: str, user: str) -> tuple[str, list[Change]]:
        group = self.group(group_id)
        if user not in group.blocks:
            return f"user {user} is not blocked in group {group_id}", []
        del group.blocks[user]
        self._touch(group)
        return "", [Change("allow", group_id, user)]

    # --- mutes ----------------------------------------------------------------------------

    def mute(self, group_id: str, user: str, expire: int) -> tuple[str, list[Change]]:
        """Mute one member until ``expire`` (ms; one value for every user of a request)."""
        group = self.group(group_id)
        if user not in group.members:
            return f"user {user} is not an ordinary member of group {group_id}", []
        group.mutes[user] = expire
        self._touch(group)
        return "", [Change("add_mute", group_id, user)]

    def unmute(self, group_id: str, user: str) -> tuple[str, list[Change]]:
        group = self.group(group_id)
        if user not in self.live_mutes(group):
            return f"user {user} is not muted in group {group_id}", []
        del group.mutes[user]
        self._touch(group)
        return "", [Change("remove_mute", group_id, user)]

    def live_mutes(self, group: Group) -> dict[str, int]:
        """Mutes that have not expired; expired ones are forgotten without a callback."""
        now = self.now()
        for user in [u for u, expire in group.mutes.items() if expire <= now]:
            del group.mutes[user]
        return group.mutes
