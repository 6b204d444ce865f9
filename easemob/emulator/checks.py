"""Input checks of the emulator: Easemob's 400 ``illegal_argument`` for a malformed request,
and the error bodies the other refusals use."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiohttp import web

from callback_sink.easemob import api
from callback_sink.easemob.api import MAX_BATCH
from callback_sink.sink.errors import EasemobError

NOT_FOUND_EXCEPTION = "EasemobServiceResourceNotFoundException"


def not_found(group_id: str) -> EasemobError:
    return EasemobError(404, api.NOT_FOUND, NOT_FOUND_EXCEPTION,
                        f"grpID({group_id}) does not exist!")  # fmt: skip


def forbidden(description: str) -> EasemobError:
    return EasemobError(403, api.FORBIDDEN, "EasemobForbiddenOpException", description)


def bad_request(description: str) -> EasemobError:
    return EasemobError(400, api.ILLEGAL_ARGUMENT, "java.lang.IllegalArgumentException",
                        description)  # fmt: skip


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"chatgroups:{offset}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":")[-1]))
    except (ValueError, UnicodeDecodeError):
        raise bad_request(f"invalid cursor {cursor!r}") from None


def text(value: object, name: str, *, slash: bool = True) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if not slash and "/" in value:
        raise bad_request(f"{name} must not contain '/'")
    return value


def boolean(value: object, name: str) -> bool:
    """A JSON boolean, or one written as a string in any case (``"true"``, ``"False"``), as
    Easemob's back end takes it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise bad_request(f"{name} must be true or false")


def integer(value: object, name: str, *, minimum: int) -> int:
    """A JSON integer, or one written as a string (``"200"``), as Easemob takes it."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_request(f"{name} must be an integer of at least {minimum}")
    return value


def user(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or "," in value or "/" in value:
        raise bad_request(f"{name} must be a user name")
    return value


def users(value: object, name: str) -> list[str]:
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list of user names")
    return [user(v, name) for v in value]


def batch(value: object) -> list[str]:
    """A checked list of 1 to 60 user names: a request body's ``usernames``, or the users
    of a path segment ``a,b,c``."""
    if isinstance(value, str):
        value = [u for u in value.split(",") if u]
    names = users(list(value) if isinstance(value, tuple) else value, "usernames")
    if not names:
        raise bad_request("usernames must not be empty")
    if len(names) > MAX_BATCH:
        raise bad_request(f"at most {MAX_BATCH} usernames per request")
    return names


def route_error(request: web.Request, exc: web.HTTPException) -> EasemobError:
    description = f"{request.method} {request.path}: {exc.reason}"
    if exc.status == 404:
        return EasemobError(404, api.NOT_FOUND, NOT_FOUND_EXCEPTION, description)
    return EasemobError(exc.status, api.ILLEGAL_ARGUMENT, "", description)


async def body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise bad_request("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def query_int(request: web.Request, name: str, default: int, *, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if not 1 <= value <= maximum:
        raise bad_request(f"{name} must be between 1 and {maximum}")
    return value
