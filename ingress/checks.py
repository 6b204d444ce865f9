"""The checks of one callback that need no application state: the body read within its
size limit, then, once parsed, not a forged sink record, its app's signature, its age."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from callback_sink.ingress.backfill import Exemptions
from callback_sink.sink.apps import check_signature
from callback_sink.sink.errors import Rejected
from callback_sink.sink.events import PRESEND_RECORD_KEY
from callback_sink.sink.settings import Settings

READ_CHUNK = 64 * 1024
#: How far a callback's timestamp may be ahead of our clock, seconds (clock skew).
FUTURE_TOLERANCE = 300.0


async def read_limited(request: web.Request, limit: int) -> bytes:
    """Read the body, refusing with 413 as soon as it is known to exceed ``limit``:
    from Content-Length before reading, or while streaming a chunked body."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, f"body of {request.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def check_callback(doc: dict[str, Any], settings: Settings, exemptions: Exemptions) -> None:
    """The checks of a parsed callback: not a forged sink record, its app's signature, its
    age. A refusal here names the callback (:func:`admit` adds its call_id and event name)."""
    if PRESEND_RECORD_KEY in doc:
        raise Rejected(400, f"{PRESEND_RECORD_KEY} is the sink's own record, not a callback")
    check_signature(doc, settings.apps, settings.secrets)
    if settings.max_age_s:
        try:
            check_age(doc["timestamp"], settings.max_age_s)
        except Rejected:
            if not await exemptions.admits(doc):  # a backfill holds its bucket open
                raise


def check_age(timestamp_ms: int, max_age_s: float) -> None:
    """Refuse a callback older than ``max_age_s`` or stamped in the future: its signature
    covers the timestamp, so a captured callback cannot be made younger."""
    age = time.time() - timestamp_ms / 1000
    if age > max_age_s:
        raise Rejected(401, f"callback too old: {age:.0f}s, SINK_MAX_AGE_S is {max_age_s:g}")
    if age < -FUTURE_TOLERANCE:
        raise Rejected(401, f"timestamp in the future: {-age:.0f}s ahead of our clock")
