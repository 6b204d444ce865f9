"""Easemob's group REST API as both of our sides know it: paths, limits and error codes.

The REST client (:mod:`easemob.rest`, :mod:`easemob.transport`) and the emulator
(:mod:`easemob.emulator`) both take them from here, so the stand-in cannot drift from what
the client sends. Paths are relative to ``/{org}/{app}`` and are templates: the client
fills them with percent-encoded values (``MEMBER.format(group=…, users=…)``); the emulator
hands them to aiohttp as routes, where ``{group}`` is a match. Where a path's last segment
may name several users, comma-separated, its placeholder is ``{users}``.
"""

from __future__ import annotations

# --- paths (group-rest-api.zh.md) ----------------------------------------------------------

TOKEN = "/token"
GROUPS = "/chatgroups"
#: One group, or several ids comma-separated (details only).
GROUP = "/chatgroups/{group}"
JOINED_GROUPS = "/users/{user}/joined_chatgroups"
MEMBERS = f"{GROUP}/users"
MEMBER = f"{MEMBERS}/{{users}}"
ADMINS = f"{GROUP}/admin"
ADMIN = f"{ADMINS}/{{user}}"
BLOCKS = f"{GROUP}/blocks/users"
BLOCK = f"{BLOCKS}/{{users}}"
MUTES = f"{GROUP}/mute"
MUTE = f"{MUTES}/{{users}}"
#: Easemob's callback storage (回调异常缓存): list the stored buckets, re-send one.
STORAGE_INFO = "/callbacks/storage/info"
STORAGE_RETRY = "/callbacks/storage/retry"

# --- limits --------------------------------------------------------------------------------

#: Most users one batch request may name (add members, block list, mute).
MAX_BATCH = 60
#: Largest (and the emulator's default) page of the member list.
MEMBERS_PAGE = 1000
#: Largest page of the app-wide group list.
MAX_GROUPS_PAGE = 1000
#: Fields ``PUT /chatgroups/{id}`` may change; Easemob refuses any other.
UPDATABLE = ("groupname", "description", "maxusers")
#: The statuses Easemob documents as "throttled: pause and retry".
THROTTLED = frozenset({429, 503})
#: The token endpoint's only grant.
GRANT_TYPE = "client_credentials"

# --- error codes: the ``error`` field of an error body --------------------------------------

NOT_FOUND = "service_resource_not_found"
FORBIDDEN = "forbidden_op"
ILLEGAL_ARGUMENT = "illegal_argument"
UNAUTHORIZED = "unauthorized"
INVALID_CLIENT = "invalid_client"
TOO_MANY_REQUESTS = "too_many_requests"
SERVICE_UNAVAILABLE = "service_unavailable"
