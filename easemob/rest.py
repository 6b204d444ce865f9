"""An async client of Easemob's group REST API: every endpoint of the spec, typed.

::

    async with GroupClient(EasemobSettings.from_env()) as client:
        group_id = await client.create_group(NewGroup(name="ops", owner="alice"))
        await client.add_members(group_id, ["bob", "carol"])
        async for group in client.iter_groups():
            ...

Tokens, pacing, retries and error bodies are the :class:`~easemob.transport.Transport`'s
business; this module only knows paths, request bodies and response shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import aiohttp

from callback_sink.easemob import api
from callback_sink.easemob.api import MAX_BATCH, MEMBERS_PAGE, UPDATABLE
from callback_sink.easemob.models import (
    GroupDetails,
    GroupDetailsBatch,
    GroupPage,
    GroupSummary,
    JoinedGroup,
    Member,
    Mute,
    NewGroup,
    UserResult,
)
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.easemob.transport import Json, Transport, segment, segments
from callback_sink.sink.errors import BatchTooLarge, EasemobError

#: Default page of the app-wide group list: a modest one (members: Easemob's maximum).
GROUPS_PAGE = 100


class GroupClient:
    """The group endpoints of one app. Use as ``async with``; safe to share between tasks."""

    def __init__(
        self,
        settings: EasemobSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        transport: Transport | None = None,
        **transport_options: Any,
    ) -> None:
        self.transport = transport or Transport(settings, session=session, **transport_options)

    async def __aenter__(self) -> GroupClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.transport.call(method, path, **kwargs)).get("data")

    # --- groups ---------------------------------------------------------------------------

    async def list_groups(self, limit: int = GROUPS_PAGE, cursor: str | None = None) -> GroupPage:
        """One page of the app's groups; pass the returned cursor for the next one."""
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        answer = await self.transport.call("GET", api.GROUPS, params=params)
        groups = tuple(GroupSummary.parse(item) for item in answer.get("data") or ())
        next_cursor = answer.get("cursor") or None
        return GroupPage(groups, str(next_cursor) if next_cursor and groups else None)

    async def iter_groups(self, page_size: int = GROUPS_PAGE) -> AsyncIterator[GroupSummary]:
        """Every group of the app, following the cursor page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_groups(page_size, cursor)
            for group in page.groups:
                yield group
            if page.cursor is None:
                return
            cursor = page.cursor

    async def joined_groups(self, user: str) -> tuple[JoinedGroup, ...]:
        """The groups ``user`` owns or belongs to."""
        data = await self._data("GET", api.JOINED_GROUPS.format(user=segment(user)))
        return tuple(JoinedGroup.parse(item) for item in data or ())

    async def group(self, group_id: str) -> GroupDetails:
        """One group's details; :class:`EasemobError` ``service_resource_not_found`` if none."""
        batch = await self.groups(group_id)
        if not batch.found:
            raise EasemobError(404, api.NOT_FOUND, "",
                               f"group {group_id} does not exist")  # fmt: skip
        return batch.found[0]

    async def groups(self, *group_ids: str) -> GroupDetailsBatch:
        """Details of several groups in one request; ids that do not exist are ``missing``."""
        if not group_ids:
            return GroupDetailsBatch((), ())
        data = await self._data("GET", api.GROUP.format(group=segments(group_ids)))
        found = tuple(GroupDetails.parse(item) for item in data or () if _is_details(item))
        seen = {g.group_id for g in found}
        return GroupDetailsBatch(found, tuple(g for g in group_ids if g not in seen))

    async def create_group(self, group: NewGroup) -> str:
        """Create a group; its new id."""
        if len(group.members) > MAX_BATCH:
            raise BatchTooLarge(len(group.members), MAX_BATCH)
        data = await self._data("POST", api.GROUPS, body=group.body())
        return str(data["groupid"])

    async def update_group(
        self,
        group_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        maxusers: int | None = None,
    ) -> Mapping[str, bool]:
        """Change name, description or size limit (the only fields Easemob lets change);
        Easemob's per-field answer, e.g. ``{"groupname": True}``."""
        body = {k: v for k, v in zip(UPDATABLE, (name, description, maxusers), strict=True)
                if v is not None}  # fmt: skip
        if not body:
            raise ValueError("update_group needs at least one of name, description, maxusers")
        data = await self._data("PUT", _group(group_id), body=body)
        return {str(k): bool(v) for k, v in (data or {}).items()}

    async def delete_group(self, group_id: str) -> None:
        """Destroy a group."""
        await self._data("DELETE", _group(group_id))

    async def transfer_owner(self, group_id: str, new_owner: str) -> None:
        """Make a member the owner; the old owner stays as an ordinary member."""
        await self._data("PUT", _group(group_id), body={"newowner": new_owner})

    # --- members --------------------------------------------------------------------------

    async def members(
        self, group_id: str, pagenum: int = 1, pagesize: int = MEMBERS_PAGE
    ) -> tuple[Member, ...]:
        """One page of the member list (the owner is listed with role ``owner``)."""
        params = {"pagenum": pagenum, "pagesize": pagesize}
        data = await self._data("GET", _path(api.MEMBERS, group_id), params=params)
        return tuple(Member.parse(item) for item in data or ())

    async def iter_members(
        self, group_id: str, pagesize: int = MEMBERS_PAGE
    ) -> AsyncIterator[Member]:
        """Every member, page after page."""
        pagenum = 1
        while True:
            page = await self.members(group_id, pagenum, pagesize)
            for member in page:
                yield member
            if len(page) < pagesize:
                return
            pagenum += 1

    async def add_member(self, group_id: str, user: str) -> UserResult:
        data = await self._data("POST", _path(api.MEMBER, group_id, user))
        return UserResult.parse(data or {}, user)

    async def add_members(self, group_id: str, users: Sequence[str]) -> tuple[UserResult, ...]:
        """Add up to 60 users at once; per user, whether Easemob added them."""
        check_batch(users)
        path = _path(api.MEMBERS, group_id)
        data = await self._data("POST", path, body={"usernames": list(users)})
        added = set((data or {}).get("newmembers", ()))
        return tuple(UserResult(u, u in added, "" if u in added else "not added") for u in users)

    async def remove_member(self, group_id: str, user: str) -> UserResult:
        return _single(await self._data("DELETE", _path(api.MEMBER, group_id, user)), user)

    async def remove_members(self, group_id: str, users: Sequence[str]) -> tuple[UserResult, ...]:
        check_batch(users)
        path = _path(api.MEMBER, group_id, *users)
        return _results(await self._data("DELETE", path), users)

    # --- admins ---------------------------------------------------------------------------

    async def admins(self, group_id: str) -> tuple[str, ...]:
        data = await self._data("GET", _path(api.ADMINS, group_id))
        return tuple(str(u) for u in data or ())

    async def add_admin(self, group_id: str, user: str) -> None:
        await self._data("POST", _path(api.ADMINS, group_id), body={"newadmin": user})

    async def remove_admin(self, group_id: str, user: str) -> None:
        await self._data("DELETE", _path(api.ADMIN, group_id, user))

    # --- block list -----------------------------------------------------------------------

    async def blocked(self, group_id: str) -> tuple[str, ...]:
        data = await self._data("GET", _path(api.BLOCKS, group_id))
        return tuple(str(u) for u in data or ())

    async def block(self, group_id: str, user: str) -> UserResult:
        return _single(await self._data("POST", _path(api.BLOCK, group_id, user)), user)

    async def block_many(self, group_id: str, users: Sequence[str]) -> tuple[UserResult, ...]:
        check_batch(users)
        path = _path(api.BLOCKS, group_id)
        return _results(await self._data("POST", path, body={"usernames": list(users)}), users)

    async def unblock(self, group_id: str, user: str) -> UserResult:
        return _single(await self._data("DELETE", _path(api.BLOCK, group_id, user)), user)

    async def unblock_many(self, group_id: str, users: Sequence[str]) -> tuple[UserResult, ...]:
        check_batch(users)
        path = _path(api.BLOCK, group_id, *users)
        return _results(await self._data("DELETE", path), users)

    # --- mutes ----------------------------------------------------------------------------

    async def mute(
        self, group_id: str, users: Sequence[str], duration_ms: int
    ) -> tuple[UserResult, ...]:
        """Mute members for ``duration_ms``; each result carries the mute's ``expire``."""
        check_batch(users)
        body = {"usernames": list(users), "mute_duration": int(duration_ms)}
        return _results(await self._data("POST", _path(api.MUTES, group_id), body=body), users)

    async def unmute(self, group_id: str, users: Sequence[str]) -> tuple[UserResult, ...]:
        check_batch(users)
        return _results(await self._data("DELETE", _path(api.MUTE, group_id, *users)), users)

    async def mutes(self, group_id: str) -> tuple[Mute, ...]:
        data = await self._data("GET", _path(api.MUTES, group_id))
        return tuple(Mute.parse(item) for item in data or ())


def check_batch(users: Sequence[str], limit: int = MAX_BATCH) -> None:
    """Refuse, before sending, a batch Easemob would refuse."""
    if isinstance(users, str):
        raise TypeError("pass a sequence of user names, not one string")
    if not users:
        raise ValueError("no user given")
    if len(users) > limit:
        raise BatchTooLarge(len(users), limit)


def _group(group_id: str) -> str:
    return api.GROUP.format(group=segment(group_id))


def _path(template: str, group_id: str, *users: str) -> str:
    """``template`` for one group and its user(s), each percent-encoded; several users go
    comma-separated in one segment."""
    return template.format(group=segment(group_id), user=segments(users), users=segments(users))


def _single(data: Json | None, user: str) -> UserResult:
    return UserResult.parse(data or {}, user)


def _results(data: Any, users: Sequence[str]) -> tuple[UserResult, ...]:
    """A batch answer is a list of per-user results, except for a single user, where
    Easemob answers with one object."""
    if isinstance(data, dict):
        return (UserResult.parse(data, users[0]),)
    return tuple(UserResult.parse(item) for item in data or ())


def _is_details(item: object) -> bool:
    """A group's details; Easemob lists a group that does not exist as an error entry."""
    return isinstance(item, dict) and "id" in item and "error" not in item
