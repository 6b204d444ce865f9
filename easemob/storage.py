"""Easemob's callback storage (回调异常缓存), a paid option: the client side.

With it, post-send callbacks that failed twice are kept by Easemob for 3 days in 10-minute
buckets, each named by a *date key*, the bucket's start as ``YYYYMMDDHHMM`` in China Standard
Time (UTC+8: the documented example lists buckets that are in the future in UTC).
``GET /{org}/{app}/callbacks/storage/info`` lists the buckets (``date``, ``size``, ``retry``:
re-sends so far); ``POST /{org}/{app}/callbacks/storage/retry`` with ``date``, ``retry`` and
``targetUrl`` asks Easemob to send one bucket again, answering ``"data": "success"``.
The emulator (:mod:`easemob.emulator.storage`) serves the same shapes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from callback_sink.easemob import api
from callback_sink.easemob.transport import Transport

#: The time zone of date keys: Easemob's servers keep China Standard Time.
DATE_KEY_TZ = dt.timezone(dt.timedelta(hours=8), "CST")
DATE_KEY_FORMAT = "%Y%m%d%H%M"
#: The width of one bucket.
BUCKET = dt.timedelta(minutes=10)
#: How long Easemob keeps stored callbacks.
RETENTION = dt.timedelta(days=3)


def date_key(when: dt.datetime) -> str:
    """The date key of the bucket holding ``when`` (an aware datetime)."""
    local = when.astimezone(DATE_KEY_TZ)
    return local.replace(minute=local.minute - local.minute % 10, second=0,
                         microsecond=0).strftime(DATE_KEY_FORMAT)  # fmt: skip


def bucket_start(key: str) -> dt.datetime:
    """The start of the bucket named ``key``, as an aware datetime; ValueError if malformed."""
    if len(key) != 12 or not key.isdigit():
        raise ValueError(f"date key {key!r} is not YYYYMMDDHHMM")
    return dt.datetime.strptime(key, DATE_KEY_FORMAT).replace(tzinfo=DATE_KEY_TZ)


@dataclass(frozen=True)
class StoredBucket:
    """One bucket of stored callbacks, as ``storage/info`` lists it."""

    date: str
    size: int
    retry: int

    @property
    def start(self) -> dt.datetime:
        return bucket_start(self.date)

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @classmethod
    def parse(cls, item: Any) -> StoredBucket:
        if not isinstance(item, dict):
            raise ValueError(f"a stored bucket is an object, not {type(item).__name__}")
        date = str(item.get("date", ""))
        bucket_start(date)
        return cls(date=date, size=int(item.get("size") or 0), retry=int(item.get("retry") or 0))


class CallbackStorage:
    """The two endpoints of the callback storage, through a REST :class:`Transport` (its
    token handling, pacing and 429 / 503 back-off)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def info(self) -> list[StoredBucket]:
        """Every stored bucket, oldest first."""
        answer = await self.transport.call("GET", api.STORAGE_INFO)
        buckets = [StoredBucket.parse(item) for item in answer.get("data") or ()]
        return sorted(buckets, key=lambda b: b.date)

    async def retry(self, date: str, *, retry: int = 0, target_url: str = "") -> bool:
        """Ask Easemob to send bucket ``date`` again, to ``target_url`` (empty: the callback
        rule's own URL); ``retry`` is the count of earlier re-sends of this bucket. True when
        Easemob answered ``success``."""
        body: dict[str, Any] = {"date": date, "retry": retry}
        if target_url:
            body["targetUrl"] = target_url
        answer = await self.transport.call("POST", api.STORAGE_RETRY, body=body)
        return answer.get("data") == "success"
