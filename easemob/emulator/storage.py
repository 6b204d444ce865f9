"""The emulator's callback storage (Easemob's 回调异常缓存), on with ``--callback-storage``.

A callback the sender dropped (non-200 twice) is kept in the 10-minute bucket of the time it
failed, named by its date key (``YYYYMMDDHHMM``, China Standard Time, as Easemob names them).
``GET /{org}/{app}/callbacks/storage/info`` lists the buckets kept for 3 days as
``{"date", "size", "retry"}``; ``POST /{org}/{app}/callbacks/storage/retry`` with ``date``
(required), ``retry`` and ``targetUrl`` (empty: the sink URL) answers ``"data": "success"`` at
once and re-sends the bucket in the background, in order, each callback tried twice like any
callback. A bucket stays stored after a re-send (its ``retry`` count goes up), as Easemob's
does. With the storage off, both answer 403, as Easemob does for an app without the option.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from callback_sink.easemob import api
from callback_sink.easemob.emulator import checks
from callback_sink.easemob.emulator.checks import bad_request, forbidden
from callback_sink.easemob.storage import RETENTION, bucket_start, date_key
from callback_sink.sink import logs
from callback_sink.sink.errors import EasemobError

if TYPE_CHECKING:
    from callback_sink.easemob.emulator.app import Emulator

log = logs.get("emulator")


@dataclass
class Bucket:
    """The callbacks one 10-minute bucket holds, and how often it was re-sent."""

    bodies: list[bytes] = field(default_factory=list)
    retry: int = 0


class EmulatedStorage:
    """Stored callbacks by date key; ``keep`` is the sender's ``on_dropped`` hook."""

    def __init__(self, enabled: bool, clock: Callable[[], float], timeout: float) -> None:
        self.enabled = enabled
        self.clock = clock
        self.timeout = timeout
        self.buckets: dict[str, Bucket] = {}
        self._resends: set[asyncio.Task[None]] = set()
        #: Re-sent callbacks answered 200, and those that failed twice again.
        self.resent = 0
        self.resend_failed = 0

    @property
    def stored(self) -> int:
        """How many callbacks are stored, in every bucket."""
        return sum(len(bucket.bodies) for bucket in self.buckets.values())

    def keep(self, body: bytes) -> None:
        if self.enabled:
            key = date_key(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
            self.buckets.setdefault(key, Bucket()).bodies.append(body)

    def info(self) -> list[dict[str, Any]]:
        """The buckets younger than the retention, oldest first, as the API lists them."""
        oldest = dt.datetime.fromtimestamp(self.clock(), dt.UTC) - RETENTION
        for key in [k for k in self.buckets if bucket_start(k) < oldest]:
            del self.buckets[key]
        return [{"date": key, "size": len(bucket.bodies), "retry": bucket.retry}
                for key, bucket in sorted(self.buckets.items())]  # fmt: skip

    def retry(self, key: str, target_url: str) -> None:
        """Re-send bucket ``key`` to ``target_url`` in the background."""
        bucket = self.buckets.get(key)
        if bucket is None:
            raise EasemobError(404, api.NOT_FOUND, checks.NOT_FOUND_EXCEPTION,
                               f"no stored callbacks for date {key}")  # fmt: skip
        bucket.retry += 1
        task = asyncio.get_running_loop().create_task(self._resend(list(bucket.bodies),
                                                                   target_url))  # fmt: skip
        self._resends.add(task)
        task.add_done_callback(self._resends.discard)

    async def drain(self) -> None:
        """Wait until every requested re-send is done."""
        while self._resends:
            await asyncio.gather(*list(self._resends), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._resends):
            task.cancel()
        await asyncio.gather(*list(self._resends), return_exceptions=True)

    async def _resend(self, bodies: list[bytes], target_url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for body in bodies:
                if await _post_twice(session, target_url, body):
                    self.resent += 1
                else:
                    self.resend_failed += 1
        log.info("emulator.storage_resent", url=target_url, callbacks=len(bodies))


async def _post_twice(session: aiohttp.ClientSession, url: str, body: bytes) -> bool:
    for _ in (1, 2):
        try:
            headers = {"Content-Type": "application/json"}
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass
    return False


def add_routes(app: web.Application, prefix: str, emulator: Emulator) -> None:
    """Serve the two storage endpoints under ``prefix`` (``/{org}/{app}``); keep what the
    emulator's callback sender drops; cancel re-sends in flight on cleanup."""
    emulator.callbacks.on_dropped = emulator.storage.keep

    async def close(app: web.Application) -> None:
        await emulator.storage.close()

    app.on_cleanup.append(close)

    def answer(request: web.Request, data: Any) -> web.Response:
        settings = emulator.settings
        base = f"{request.url.origin()}{prefix}"
        body = {"path": "/callbacks", "uri": f"{base}/callbacks",
                "timestamp": int(emulator.clock() * 1000), "organization": settings.org,
                "application": emulator.application, "action": "post", "data": data,
                "duration": 0, "applicationName": settings.app}  # fmt: skip
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    def storage() -> EmulatedStorage:
        if not emulator.storage.enabled:
            raise forbidden("callback storage is not enabled for this app")
        return emulator.storage

    async def info(request: web.Request) -> web.Response:
        return answer(request, storage().info())

    async def retry(request: web.Request) -> web.Response:
        store = storage()
        body = await checks.body(request)
        key = body.get("date")
        if not isinstance(key, str):
            raise bad_request("date is required: a date key, YYYYMMDDHHMM")
        try:
            bucket_start(key)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        if body.get("retry") not in (None, ""):
            checks.integer(body["retry"], "retry", minimum=0)
        target = body.get("targetUrl") or emulator.settings.sink_url
        if not isinstance(target, str) or not target.startswith(("http://", "https://")):
            raise bad_request("targetUrl must be an http(s) URL (no callback URL configured)")
        store.retry(key, target)
        return answer(request, "success")

    app.router.add_route("GET", prefix + api.STORAGE_INFO, info)
    app.router.add_route("POST", prefix + api.STORAGE_RETRY, retry)
