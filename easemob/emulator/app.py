"""The emulator's HTTP face: the token endpoint and every group endpoint of the spec.

A request goes through :func:`_pipeline`: record → injected fault → token check → the
endpoint, which calls :class:`~easemob.emulator.state.AppState` and hands the resulting
changes to the :class:`~easemob.emulator.callbacks.CallbackSender`. An
:class:`EasemobError` becomes Easemob's error body with its status.
"""

from __future__ import annotations

import random
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from callback_sink.easemob import api
from callback_sink.easemob.emulator import checks
from callback_sink.easemob.emulator.callbacks import CallbackSender
from callback_sink.easemob.emulator.checks import bad_request, batch
from callback_sink.easemob.emulator.faults import Faults
from callback_sink.easemob.emulator.messages import Messages
from callback_sink.easemob.emulator.quota import Quota
from callback_sink.easemob.emulator.state import AppState, Change
from callback_sink.easemob.emulator.storage import EmulatedStorage, add_routes
from callback_sink.easemob.emulator.tolerance import accept_trailing_slashes
from callback_sink.easemob.settings import EmulatorSettings
from callback_sink.sink import logs
from callback_sink.sink.errors import EasemobError

log = logs.get("emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Requests remembered in ``Emulator.requests`` (the oldest are forgotten).
REQUEST_LOG = 100_000


class Emulator:
    """One emulated Easemob app: state, tokens, faults and callbacks.

    ``app()`` builds the aiohttp application (for ``web.run_app`` or a test server).
    """

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        callback_secret: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        rng = random.Random(settings.seed)
        self.state = AppState(lambda: int(self.clock() * 1000), rng)
        self.faults = Faults(settings.throttle_rate, settings.unavailable_rate, rng)
        self.callbacks = CallbackSender(
            appkey=settings.appkey,
            host="easemob-emulator",
            secret=callback_secret or settings.callback_secret,
            sink_url=settings.sink_url,
            delay=settings.callback_delay,
            duplicate_rate=settings.duplicate_rate,
            timeout=settings.callback_timeout,
            rng=rng,
        )
        self.application = str(uuid.uuid5(uuid.NAMESPACE_URL, settings.appkey))
        self.storage = EmulatedStorage(settings.callback_storage, clock, settings.callback_timeout)
        self.quota = Quota(settings.rate_limit, clock)
        self.messages = Messages(settings, self.callbacks, clock)  # client sends, pre-send
        self._tokens: dict[str, float] = {}
        #: Tokens issued so far, and every request seen as (method, path, status).
        self.tokens_issued = 0
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=REQUEST_LOG)

    def expire_tokens(self) -> None:
        """Make every issued token invalid, as if they had all expired."""
        self._tokens.clear()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._pipeline])
        app.cleanup_ctx.append(self._callbacks_ctx)
        prefix = f"/{self.settings.org}/{self.settings.app}"
        for method, path, handler in (
            ("POST", api.TOKEN, self.token),
            ("GET", api.GROUPS, self.list_groups),
            ("POST", api.GROUPS, self.create_group),
            ("GET", api.JOINED_GROUPS, self.joined_groups),
            ("GET", api.GROUP, self.group_details),
            ("PUT", api.GROUP, self.update_group),
            ("DELETE", api.GROUP, self.delete_group),
            ("GET", api.MEMBERS, self.members),
            ("POST", api.MEMBERS, self.add_members),
            ("POST", api.MEMBER, self.add_member),
            ("DELETE", api.MEMBER, self.remove_members),
            ("GET", api.ADMINS, self.admins),
            ("POST", api.ADMINS, self.add_admin),
            ("DELETE", api.ADMIN, self.remove_admin),
            ("GET", api.BLOCKS, self.blocked),
            ("POST", api.BLOCKS, self.block_many),
            ("POST", api.BLOCK, self.block),
            ("DELETE", api.BLOCK, self.unblock),
            ("GET", api.MUTES, self.mutes),
            ("POST", api.MUTES, self.mute),
            ("DELETE", api.MUTE, self.unmute),
        ):
            app.router.add_route(method, prefix + path, handler)
        add_routes(app, prefix, self)  # callback storage
        self.messages.add_routes(app, prefix)  # emulator-only: a client sends a message
        accept_trailing_slashes(app)  # last: every route above gets its twin
        return app

    async def _callbacks_ctx(self, app: web.Application) -> AsyncIterator[None]:
        await self.callbacks.start()
        yield
        await self.callbacks.stop()

    # --- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            fault = self.faults.pick()
            if fault is not None:
                raise fault
            self.quota.count()
            if not request.path.rstrip("/").endswith("/token"):
                self._check_token(request)
            response = await handler(request)
        except EasemobError as exc:
            response = self._error(exc)
        except web.HTTPException as exc:  # no such route or method: still Easemob's body
            response = self._error(checks.route_error(request, exc))
        self.requests.append((request.method, request.path, response.status))
        return response

    def _check_token(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expires = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if expires is None or expires <= self.clock():
            self._tokens.pop(token, None)
            raise EasemobError(401, api.UNAUTHORIZED, "EasemobUnauthorizedException",
                               "Unable to authenticate due to expired access token")  # fmt: skip

    def _error(self, exc: EasemobError) -> web.Response:
        body = {"error": exc.error, "exception": exc.exception, "timestamp": self._now(),
                "duration": 0, "error_description": exc.error_description}  # fmt: skip
        return web.Response(body=orjson.dumps(body), status=exc.status,
                            content_type="application/json")  # fmt: skip

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def _ok(self, request: web.Request, data: Any, **extra: Any) -> web.Response:
        body = {"action": request.method.lower(), "application": self.application,
                "params": {k: request.query.getall(k) for k in request.query},
                "uri": str(request.url), "entities": [], "data": data, "timestamp": self._now(),
                "duration": 0, "organization": self.settings.org,
                "applicationName": self.settings.app, **extra}  # fmt: skip
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def _emit(self, changes: list[Change]) -> None:
        for change in changes:
            log.debug("emulator.change", operation=change.operation, group_id=change.group_id,
                      user=change.user)  # fmt: skip
        self.callbacks.emit(changes)

    # --- endpoints ------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        body = await checks.body(request)
        if body.get("grant_type") != api.GRANT_TYPE:
            raise bad_request(f"grant_type must be {api.GRANT_TYPE}")
        if (body.get("client_id"), body.get("client_secret")) != (
            self.settings.client_id,
            self.settings.client_secret,
        ):
            raise EasemobError(401, api.INVALID_CLIENT, "EasemobUnauthorizedException",
                               "client_id or client_secret is not valid")  # fmt: skip
        ttl = checks.integer(body.get("ttl") or self.settings.token_ttl, "ttl", minimum=1)
        token = "YWMt" + secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + ttl
        self.tokens_issued += 1
        answer = {"access_token": token, "expires_in": ttl, "application": self.application}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def list_groups(self, request: web.Request) -> web.Response:
        limit = checks.query_int(request, "limit", 10, maximum=api.MAX_GROUPS_PAGE)
        groups, cursor = self.state.page(limit, request.query.get("cursor"))
        appkey = self.settings.appkey
        data = [{"owner": f"{appkey}_{g.owner}", "groupid": g.group_id, "affiliations": g.size,
                 "type": "group", "last_modified": str(g.last_modified), "groupname": g.name}
                for g in groups]  # fmt: skip
        extra: dict[str, Any] = {"count": len(data)}
        if cursor:
            extra["cursor"] = cursor
        return self._ok(request, data, **extra)

    async def joined_groups(self, request: web.Request) -> web.Response:
        groups = self.state.joined(request.match_info["user"])
        data = [{"groupid": g.group_id, "groupname": g.name} for g in groups]
        return self._ok(request, data, count=len(data))

    async def group_details(self, request: web.Request) -> web.Response:
        ids = [i for i in request.match_info["group"].split(",") if i]
        if len(ids) == 1:
            return self._ok(request, [self.state.group(ids[0]).details()], count=1)
        data = [self.state.groups[i].details() if i in self.state.groups
                else {"id": i, "error": "group id doesn't exist"} for i in ids]  # fmt: skip
        return self._ok(request, data, count=len(data))

    async def create_group(self, request: web.Request) -> web.Response:
        group_id, changes = self.state.create(await checks.body(request))
        self._emit(changes)
        return self._ok(request, {"groupid": group_id})

    async def update_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        body = await checks.body(request)
        if "newowner" in body:
            if len(body) != 1:
                raise bad_request("newowner cannot be combined with other fields")
            self._emit(self.state.transfer(group_id, body["newowner"]))
            return self._ok(request, {"newowner": True})
        data, changes = self.state.update(group_id, body)
        self._emit(changes)
        return self._ok(request, data)

    async def delete_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        self._emit(self.state.delete(group_id))
        return self._ok(request, {"success": True, "groupid": group_id})

    async def members(self, request: web.Request) -> web.Response:
        pagenum = checks.query_int(request, "pagenum", 1, maximum=10**6)
        pagesize = checks.query_int(request, "pagesize", api.MEMBERS_PAGE,
                                    maximum=api.MEMBERS_PAGE)  # fmt: skip
        data = self.state.members(request.match_info["group"], pagenum, pagesize)
        return self._ok(request, data, count=len(data))

    async def add_member(self, request: web.Request) -> web.Response:
        group_id, user = request.match_info["group"], request.match_info["users"]
        self._emit(self.state.add_member(group_id, user))
        return self._ok(request, {"action": "add_member", "result": True, "groupid": group_id,
                                  "user": user})  # fmt: skip

    async def add_members(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        added, changes = self.state.add_members(
            group_id, (await checks.body(request)).get("usernames")
        )
        self._emit(changes)
        return self._ok(request, {"newmembers": added, "action": "add_member",
                                  "groupid": group_id})  # fmt: skip

    async def remove_members(self, request: web.Request) -> web.Response:
        return await self._per_user(request, "remove_member", self.state.remove_member)

    async def admins(self, request: web.Request) -> web.Response:
        group = self.state.group(request.match_info["group"])
        return self._ok(request, list(group.admins), count=len(group.admins))

    async def add_admin(self, request: web.Request) -> web.Response:
        user = (await checks.body(request)).get("newadmin")
        self._emit(self.state.add_admin(request.match_info["group"], user))
        return self._ok(request, {"result": "success", "newadmin": user})

    async def remove_admin(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        self._emit(self.state.remove_admin(request.match_info["group"], user))
        return self._ok(request, {"result": "success", "oldadmin": user})

    async def blocked(self, request: web.Request) -> web.Response:
        group = self.state.group(request.match_info["group"])
        return self._ok(request, list(group.blocks), count=len(group.blocks))

    async def block(self, request: web.Request) -> web.Response:
        return await self._per_user(request, "add_blocks", self.state.block)

    async def block_many(self, request: web.Request) -> web.Response:
        users = batch((await checks.body(request)).get("usernames"))
        return await self._per_user(request, "add_blocks", self.state.block, users)

    async def unblock(self, request: web.Request) -> web.Response:
        return await self._per_user(request, "remove_blocks", self.state.unblock)

    async def _per_user(
        self,
        request: web.Request,
        action: str,
        operation: Callable[[str, str], tuple[str, list[Change]]],
        users: list[str] | None = None,
    ) -> web.Response:
        """A call naming one user (in the path) answers one object and fails with 403 when
        refused; one naming several answers a result per user, failing only if all fail."""
        group_id = request.match_info["group"]
        single = users is None and "," not in request.match_info.get("users", "")
        names = users or batch(request.match_info["users"])
        self.state.group(group_id)
        results = []
        for user in dict.fromkeys(names):
            reason, changes = operation(group_id, user)
            self._emit(changes)
            result: dict[str, Any] = {"result": not reason, "action": action, "user": user,
                                      "groupid": group_id}  # fmt: skip
            if reason:
                result["reason"] = reason
            results.append(result)
        if all(not r["result"] for r in results) and (single or action == "remove_member"):
            raise checks.forbidden("; ".join(r["reason"] for r in results))
        return self._ok(request, results[0] if single else results)

    async def mutes(self, request: web.Request) -> web.Response:
        group = self.state.group(request.match_info["group"])
        data = [{"expire": e, "user": u} for u, e in self.state.live_mutes(group).items()]
        return self._ok(request, data, count=len(data))

    async def mute(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        body = await checks.body(request)
        users = batch(body.get("usernames"))
        duration = checks.integer(body.get("mute_duration"), "mute_duration", minimum=1)
        self.state.group(group_id)
        expire = self._now() + duration
        data = []
        for user in dict.fromkeys(users):
            reason, changes = self.state.mute(group_id, user, expire)
            self._emit(changes)
            data.append({"result": True, "expire": expire, "user": user} if not reason
                        else {"result": False, "user": user, "reason": reason})  # fmt: skip
        return self._ok(request, data)

    async def unmute(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        self.state.group(group_id)
        data = []
        for user in dict.fromkeys(batch(request.match_info["users"])):
            reason, changes = self.state.unmute(group_id, user)
            self._emit(changes)
            data.append({"result": not reason, "user": user, **({"reason": reason} if reason
                                                                 else {})})  # fmt: skip
        return self._ok(request, data)
