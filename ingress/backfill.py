"""The ingress's side of backfill: old callbacks admitted while ``backfill`` holds their
bucket open (see :mod:`sink.replay_window`).

Only a correctly signed callback that the replay window refused asks Redis, so the normal path
never waits for it; Redis down or slow (over :data:`LOOKUP_TIMEOUT`) keeps the refusal (401)
and logs why: ``backfill`` can be run again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from callback_sink.sink import logs
from callback_sink.sink.apps import appkey_of
from callback_sink.sink.redis_client import connect
from callback_sink.sink.replay_window import is_exempt, is_shared
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import redis_tls_kwargs

if TYPE_CHECKING:
    from callback_sink.sink.redis_client import Client

log = logs.get("ingress")

#: An exemption look-up that takes longer than this counts as "no exemption", seconds.
LOOKUP_TIMEOUT = 1.0


class Exemptions:
    """Answers "may this old callback in?" from the shared store; ``close()`` on shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.dedup_url if is_shared(settings.dedup_url) else None
        self._prefix = settings.topology_prefix
        self._dedup_ttl_ms = settings.dedup_ttl * 1000
        self._tls = redis_tls_kwargs(settings)
        self._client: Client | None = None
        #: Old callbacks admitted so far (for tests and the curious).
        self.admitted = 0

    async def admits(self, doc: dict[str, Any]) -> bool:
        """True when ``doc`` (signed, too old for the window) falls in an open exemption and
        is younger than the dedup TTL (an older replay would not meet its done marks)."""
        appkey = appkey_of(doc)
        if self._url is None or appkey is None:
            return False
        if time.time() * 1000 - doc["timestamp"] >= self._dedup_ttl_ms:
            return False
        if self._client is None:
            self._client = connect(
                self._url, socket_timeout=LOOKUP_TIMEOUT, socket_connect_timeout=LOOKUP_TIMEOUT,
                **self._tls,
            )  # fmt: skip
        try:
            exempt = await is_exempt(self._client, self._prefix, appkey, doc["timestamp"])
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("backfill.exemption_unavailable", error=type(exc).__name__)
            return False
        self.admitted += exempt
        return exempt

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
