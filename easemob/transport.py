"""The HTTP layer of the REST client: app token, rate limit, retries, error bodies.

Every call goes through :meth:`Transport.call`: valid token → paced send (429 / 503 retried
with exponential back-off and jitter) → on a 401, one new token and one more try → an
Easemob error body becomes an :class:`EasemobError` carrying its fields. Neither the client
secret nor a token is ever written to a log line: only method, path, status and timings.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from callback_sink.easemob import api
from callback_sink.easemob.models import Token
from callback_sink.easemob.ratelimit import RateLimiter
from callback_sink.easemob.redis_limiter import Limiter
from callback_sink.easemob.settings import EasemobSettings
from callback_sink.sink import logs
from callback_sink.sink.errors import EasemobError, EasemobThrottled, EasemobUnreachable
from callback_sink.sink.metrics import RestMetrics

log = logs.get("easemob")

#: A token is renewed when this fraction of its lifetime is left (at most TOKEN_MARGIN_MAX),
#: so that a request never leaves with a token about to expire in flight.
TOKEN_MARGIN_FRACTION = 0.1
TOKEN_MARGIN_MAX = 300.0

Json = dict[str, Any]


def segment(value: str) -> str:
    """One path segment, percent-encoded (user names and group ids are free text)."""
    return quote(str(value), safe="")


def segments(values: list[str] | tuple[str, ...]) -> str:
    """Several users or groups in one segment, comma-separated as Easemob expects."""
    return ",".join(segment(v) for v in values)


class Transport:
    """Sends authenticated requests to one app's REST API; ``async with`` closes it."""

    def __init__(
        self,
        settings: EasemobSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        metrics: RestMetrics | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.settings = settings
        #: Every answer is counted by status (default: the process's ``RestMetrics.on()``).
        self.metrics = metrics or RestMetrics.on()
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        #: Paces requests: this client's own, or one shared by every process of the app
        #: (:func:`easemob.redis_limiter.limiter_for`).
        self._limiter: Limiter = limiter or RateLimiter(settings.rate_limit, clock=clock,
                                                        sleep=sleep)  # fmt: skip
        self._token: str | None = None
        self._token_valid_until = 0.0
        self._token_lock = asyncio.Lock()
        #: How many tokens this transport fetched (for metrics and tests).
        self.tokens_fetched = 0

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        await self._limiter.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Json | None = None,
    ) -> Json:
        """One authenticated request; the success body, or :class:`EasemobError`."""
        token = await self._current_token()
        status, answer = await self._send(method, path, params, body, token)
        if status == 401:
            token = await self._renew(token)
            status, answer = await self._send(method, path, params, body, token)
        if not 200 <= status < 300:
            raise error_from(status, answer)
        return answer

    async def _current_token(self) -> str:
        async with self._token_lock:
            if self._token is None or self._clock() >= self._token_valid_until:
                await self._fetch_token()
            assert self._token is not None
            return self._token

    async def _renew(self, rejected: str) -> str:
        """A 401: fetch a new token, unless a concurrent request already did."""
        async with self._token_lock:
            if self._token == rejected or self._token is None:
                log.info("easemob.token_rejected")
                await self._fetch_token()
            assert self._token is not None
            return self._token

    async def _fetch_token(self) -> None:
        request: Json = {
            "grant_type": api.GRANT_TYPE,
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
        }
        if self.settings.token_ttl > 0:
            request["ttl"] = self.settings.token_ttl
        status, answer = await self._send("POST", api.TOKEN, None, request, None)
        if status != 200:
            raise error_from(status, answer)
        token = Token.parse(answer)
        margin = min(TOKEN_MARGIN_MAX, token.expires_in * TOKEN_MARGIN_FRACTION)
        self._token = token.access_token
        self._token_valid_until = self._clock() + token.expires_in - margin
        self.tokens_fetched += 1
        log.info("easemob.token_fetched", expires_in=token.expires_in)

    def backoff(self, attempt: int) -> float:
        """Delay after the ``attempt``-th throttled answer: exponential, capped, with jitter
        over its upper half so that many clients do not retry in step."""
        ceiling = min(self.settings.backoff_max, self.settings.backoff_base * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._jitter() * ceiling / 2

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        body: Json | None,
        token: str | None,
    ) -> tuple[int, Json]:
        """Send with pacing; retry 429 / 503 up to ``max_attempts`` times."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            await self._limiter.acquire()
            status, answer = await self._once(method, path, params, body, token, attempt)
            if status not in api.THROTTLED:
                return status, answer
            if attempt == attempts:
                break
            delay = self.backoff(attempt)
            log.warning("easemob.throttled", path=path, status=status, attempt=attempt,
                        retry_in_s=round(delay, 3))  # fmt: skip
            await self._sleep(delay)
        raise error_from(status, answer)

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        body: Json | None,
        token: str | None,
        attempt: int,
    ) -> tuple[int, Json]:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        url = URL(self.settings.base_url + path, encoded=True)
        if params:
            url = url.update_query({k: str(v) for k, v in params.items()})
        started = time.perf_counter()
        try:
            async with self._http().request(method, url, data=data, headers=headers) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.metrics.answered("error")
            log.warning("easemob.unreachable", method=method, path=path,
                        error=type(exc).__name__)  # fmt: skip
            raise EasemobUnreachable(0, "unreachable", type(exc).__name__, str(exc)) from exc
        log.debug("easemob.request", method=method, path=path, status=status, attempt=attempt,
                  duration_ms=round((time.perf_counter() - started) * 1000, 3))  # fmt: skip
        self.metrics.answered(status)
        return status, _json(raw)


def _json(raw: bytes) -> Json:
    try:
        parsed = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {"error_description": raw[:200].decode("utf-8", "replace")}
    return parsed if isinstance(parsed, dict) else {"data": parsed}


def error_from(status: int, body: Json) -> EasemobError:
    """Easemob's error body as an exception (429 / 503 as :class:`EasemobThrottled`)."""
    kind = EasemobThrottled if status in api.THROTTLED else EasemobError
    return kind(
        status,
        str(body.get("error") or f"http_{status}"),
        str(body.get("exception") or ""),
        str(body.get("error_description") or ""),
    )
