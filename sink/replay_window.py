"""Exemptions from the replay window, shared in Redis between ``backfill`` and the ingress.

The ingress refuses a callback older than ``SINK_MAX_AGE_S``: a captured callback cannot be
replayed outside the window. Callbacks that Easemob re-sends from its callback storage are old
on purpose. Before asking Easemob to re-send one 10-minute bucket, ``callback-sink backfill``
opens an exemption for that app and bucket in the shared Redis store (``SINK_DEDUP_URL``), for
``SINK_BACKFILL_WINDOW_S``; an ingress that sees a correctly signed callback older than the
window admits it while the exemption of its bucket is open (and only while it is younger than
the dedup TTL, so that every admitted replay still meets its done marks).

Easemob files a callback in the bucket of the time it failed, up to two minutes after its
timestamp (it waits up to 60 s, then retries once), so the exemption of a bucket also admits
callbacks stamped in the 10 minutes before it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from callback_sink.sink.redis_client import SCHEMES

if TYPE_CHECKING:
    from callback_sink.sink.redis_client import Client

#: Easemob's callback storage keeps failed callbacks in 10-minute buckets ("date keys").
BUCKET_MS = 10 * 60 * 1000


def bucket_of(timestamp_ms: int) -> int:
    """The start (ms) of the 10-minute bucket holding ``timestamp_ms``."""
    return timestamp_ms // BUCKET_MS * BUCKET_MS


def key(prefix: str, appkey: str, bucket_start_ms: int) -> str:
    return f"{prefix}:backfill:{appkey}:{bucket_start_ms}"


def keys_admitting(prefix: str, appkey: str, timestamp_ms: int) -> tuple[str, str]:
    """The two exemptions that admit a callback stamped ``timestamp_ms``: its own bucket's
    and the next one's (where it lands when it failed near the end of its bucket)."""
    start = bucket_of(timestamp_ms)
    return key(prefix, appkey, start), key(prefix, appkey, start + BUCKET_MS)


def is_shared(url: str) -> bool:
    """True when ``url`` (``SINK_DEDUP_URL``) is a Redis store other processes can see."""
    return url.startswith(SCHEMES)


async def open_exemption(
    client: Client, prefix: str, appkey: str, bucket_start_ms: int, ttl_s: float
) -> None:
    """Admit callbacks of ``appkey`` from the bucket starting at ``bucket_start_ms`` (and the
    10 minutes before it) for ``ttl_s`` seconds, however old they are."""
    await client.set(key(prefix, appkey, bucket_start_ms), b"1", px=max(1, int(ttl_s * 1000)))


async def is_exempt(client: Client, prefix: str, appkey: str, timestamp_ms: int) -> bool:
    """True while an exemption admits a callback of ``appkey`` stamped ``timestamp_ms``
    (two GETs in one pipeline: in a Redis Cluster the two keys may live on two nodes)."""
    pipe = client.pipeline(transaction=False)
    for key in keys_admitting(prefix, appkey, timestamp_ms):
        pipe.get(key)
    values = await pipe.execute()
    return any(value is not None for value in values)
