"""From a group callback to facts: the one place that knows who each event is about.

Legacy ``muc`` events name the affected user in different fields (the table below, also
in docs/reference/group-directory.md, "Who each callback is about"); new-format
``group_op`` events list users in ``payload.member`` or ``payload.admin``. Events that change
nothing the directory keeps (applications, invitations, announcements, files, metadata, a
user muting a group for themselves) give no fact, and neither does an event whose
``status.error_code`` says it failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from callback_sink.handlers.directory import facts as f
from callback_sink.handlers.directory.facts import Fact
from callback_sink.sink.events import Event

#: Legacy operation → the field that names the affected user ("" : none, a group event).
AFFECTED_USER: dict[str, str] = {
    "create": "to",  # the owner
    "destroy": "",
    "update": "",
    "presence": "from",  # {appkey}_{user}@easemob.com; `to` is the group id
    "absence": "from",
    "leave": "from",
    "apply_accept": "to",  # the applicant
    "invite_accept": "to",  # the invitee
    "kick": "to",
    "ban": "to",
    "allow": "to",
    "assing_owner": "to",  # the new owner
    "add_admin": "to",
    "remove_admin": "to",
    "add_mute": "to",
    "remove_mute": "to",
    "add_user_white_list": "to",
    "remove_user_white_list": "to",
    "ban_group": "",
    "remove_ban_group": "",
}

_LEGACY: dict[str, Callable[[str], list[Fact]]] = {
    "create": f.became_owner,
    "destroy": lambda u: [Fact(f.DESTROYED)],
    "update": lambda u: [],
    "presence": f.joined,
    "apply_accept": f.joined,
    "invite_accept": f.joined,
    "absence": f.left,
    "leave": f.left,
    "kick": f.left,
    "ban": f.blocked,
    "allow": lambda u: [Fact(f.BLOCK, u, present=False)],
    "assing_owner": f.became_owner,
    "add_admin": lambda u: [Fact(f.ADMIN, u)],
    "remove_admin": lambda u: [Fact(f.ADMIN, u, present=False)],
    "add_mute": lambda u: [Fact(f.MUTE, u)],
    "remove_mute": lambda u: [Fact(f.MUTE, u, present=False)],
    "add_user_white_list": lambda u: [Fact(f.ALLOW, u)],
    "remove_user_white_list": lambda u: [Fact(f.ALLOW, u, present=False)],
    "ban_group": lambda u: [Fact(f.MUTED_ALL)],
    "remove_ban_group": lambda u: [Fact(f.MUTED_ALL, present=False)],
}

#: New-format ``payload.info`` keys → the spec's model field names.
_INFO_FIELDS = {
    "title": "name",
    "description": "description",
    "max_users": "maxusers",
    "public": "public",
    "membersonly": "membersonly",
    "members_only": "membersonly",
    "allow_user_invites": "allowinvites",
    "allowinvites": "allowinvites",
}


def interpret(event: Event) -> list[Fact]:
    """The facts ``event`` states about its group, ending with whether the group is a chat
    room; empty when the event says nothing the directory keeps."""
    if event.group_id is None:
        return []
    found = _legacy(event) if event.family == "muc" else _group_op(event)
    if found is None:
        return []
    return [*found, Fact(f.CHATROOM, present=event.is_chatroom)]


def affected_user(event: Event) -> str | None:
    """The user a legacy event is about, read from the field :data:`AFFECTED_USER` names."""
    where = AFFECTED_USER.get(event.operation or "")
    if not where:
        return None
    return user_of(event.from_ if where == "from" else event.to, event.raw.get("appkey"))


def user_of(address: str | None, appkey: object = None) -> str | None:
    """``alice``, or ``org#app_alice@easemob.com/ios_…`` → ``alice``; None if not a user
    (an app key alone, like the ``from`` of an admin's operation)."""
    if not address:
        return None
    local = address.split("/", 1)[0].split("@", 1)[0]
    if isinstance(appkey, str) and appkey and local.startswith(f"{appkey}_"):
        return local[len(appkey) + 1 :] or None
    if "#" in local:
        _, sep, user = local.partition("#")[2].partition("_")
        return user if sep and user else None
    return local or None


def _legacy(event: Event) -> list[Fact] | None:
    """None when the event is not one the directory reads (or reports a failure)."""
    rule = _LEGACY.get(event.operation or "")
    status = event.payload.get("status")
    if rule is None or (isinstance(status, dict) and status.get("error_code", "ok") != "ok"):
        return None
    user = affected_user(event)
    if AFFECTED_USER[event.operation or ""] and user is None:
        return None
    return rule(user or "")


def _group_op(event: Event) -> list[Fact] | None:
    payload = event.payload
    kind = str(payload.get("type", "")).upper()
    members = _names(payload.get("member"))
    operation = (event.operation or "").upper()
    if operation == "CREATE":
        return _created(payload, event.raw.get("appkey"))
    if operation == "DELETE":
        return [Fact(f.DESTROYED)]
    if operation == "JOIN":
        return [fact for user in members for fact in f.joined(user)]
    if operation == "LEAVE":
        return [fact for user in members for fact in f.left(user)]
    if operation == "UPDATE":
        return _updated(kind, payload) or None
    add = kind == "ADD"
    if kind not in ("ADD", "REMOVE"):
        return None
    if operation == "ADMIN":
        return [Fact(f.ADMIN, user, add) for user in _names(payload.get("admin"))]
    if operation == "MUTE":
        expire = _int(payload.get("expire_timestamp")) if add else None
        return [Fact(f.MUTE, user, add, expire) for user in members]
    if operation == "BLOCK":
        if add:
            return [fact for user in members for fact in f.blocked(user)]
        return [Fact(f.BLOCK, user, present=False) for user in members]
    if operation == "WHITE":
        return [Fact(f.ALLOW, user, add) for user in members]
    return None


def _created(payload: dict[str, Any], appkey: object) -> list[Fact]:
    info = payload.get("info") if isinstance(payload.get("info"), dict) else {}
    assert isinstance(info, dict)
    roles = payload.get("role") if isinstance(payload.get("role"), dict) else {}
    assert isinstance(roles, dict)
    owner = next((str(u) for u, role in roles.items() if role == "owner"), None)
    owner = owner or user_of(str(info.get("owner") or ""), appkey)
    found = f.became_owner(owner) if owner else []
    found += [fact for user in _names(payload.get("member")) for fact in f.joined(user)]
    found += [Fact(f.ADMIN, str(u)) for u, role in roles.items() if role == "admin"]
    return found + f.fields(model_fields(info))


def _updated(kind: str, payload: dict[str, Any]) -> list[Fact]:
    if kind == "OWNER" and payload.get("new_owner"):
        return f.became_owner(str(payload["new_owner"]))
    if kind == "MUTE" and "mute" in payload:
        return [Fact(f.MUTED_ALL, present=_bool(payload["mute"]))]
    if kind == "INFO" and isinstance(payload.get("info"), dict):
        return f.fields(model_fields(payload["info"]))
    return []


def model_fields(info: dict[str, Any]) -> dict[str, Any]:
    """The spec's model fields found in a new-format ``info`` object, typed."""
    values: dict[str, Any] = {}
    for key, name in _INFO_FIELDS.items():
        if key in info:
            raw = info[key]
            values[name] = _int(raw) if name == "maxusers" else (
                _bool(raw) if name in ("public", "membersonly", "allowinvites") else str(raw)
            )  # fmt: skip
    return values


def _names(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if v]
    return []


def _bool(value: object) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None
