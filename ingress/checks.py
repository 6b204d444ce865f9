"""The checks of one callback that need no application state: the body read within its
size limit, then, once parsed, not a forged sink record, its app's signature, its age."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from callback_sink.ingress.backfill import Exemptions
from callback_sink.ingress.budget import BodyBudget
from callback_sink.sink.apps import check_signature
from callback_sink.sink.errors import Rejected
from callback_sink.sink.events import PRESEND_RECORD_KEY
from callback_sink.sink.settings import Settings

READ_CHUNK = 64 * 1024
#: How far a callback's timestamp may be ahead of our clock, seconds (clock skew).
FUTURE_TOLERANCE = 300.0
FORGED_RECORD = f"{PRESEND_RECORD_KEY} is the sink's own record, not a callback"


async def read_body(request: web.Request, settings: Settings, budget: BodyBudget) -> bytes:
    """The body within ``SINK_BODY_LIMIT`` (413) and ``budget`` (503); one still arriving is
    read under ``SINK_READ_TIMEOUT_S`` (408)."""
    body = read_buffered(request, settings.body_limit, budget)
    if body is not None:
        return body
    try:
        async with asyncio.timeout(settings.read_timeout_s):
            return await read_limited(request, settings.body_limit, budget)
    except TimeoutError:
        raise Rejected(408, "body not received within SINK_READ_TIMEOUT_S") from None


def read_buffered(request: web.Request, limit: int, budget: BodyBudget) -> bytes | None:
    """The body when aiohttp holds all of it already, else None (then :func:`read_limited`).
    The usual case: a callback is a few hundred bytes, which arrive with the request head, so
    there is nothing to wait for (no read deadline, no chunk iterator). Same refusals and
    budget as :func:`read_limited`."""
    content = request.content
    if not content.is_eof():
        return None
    _announced(request, limit)
    body = content.read_nowait()
    if len(body) > limit:
        raise Rejected(413, "body exceeds SINK_BODY_LIMIT", details={"body_limit": limit})
    budget.take(request, len(body), len(body))  # all of it is here: announced or not
    return body


def _announced(request: web.Request, limit: int) -> int | None:
    """The Content-Length, refused with 413 when over ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        details: dict[str, object] = {"content_length": length, "body_limit": limit}
        raise Rejected(413, "body exceeds SINK_BODY_LIMIT", details=details)
    return length


async def read_limited(request: web.Request, limit: int, budget: BodyBudget) -> bytes:
    """Read the body, refusing with 413 as soon as it is known to exceed ``limit``:
    from Content-Length before reading, or while streaming a chunked body. Its bytes are
    reserved in the process's ``budget`` first (503 when they do not fit): the announced
    length before reading, a chunked body chunk by chunk; the caller releases them."""
    length = _announced(request, limit)
    if length is not None:
        budget.take(request, length, length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body exceeds SINK_BODY_LIMIT", details={"body_limit": limit})
        if length is None:
            budget.take(request, len(chunk), size)
        chunks.append(chunk)
    return b"".join(chunks)


async def check_callback(
    doc: dict[str, Any], settings: Settings, exemptions: Exemptions
) -> str | None:
    """The checks of a parsed callback: not a forged sink record, its app's signature, its
    age. A refusal here names the callback (:func:`admit` adds its call_id and event name).
    Returns the app of a callback that named none, which only that app's secret verified
    (``SINK_APPS``): ``doc["appkey"]`` is set to it, so that handlers see it."""
    if PRESEND_RECORD_KEY in doc:
        raise Rejected(400, FORGED_RECORD)
    if adopted := check_signature(doc, settings.apps, settings.secrets):
        doc["appkey"] = adopted
    if settings.max_age_s:
        try:
            check_age(doc["timestamp"], settings.max_age_s)
        except Rejected as exc:
            if not await exemptions.admits(doc):  # a backfill holds its bucket open
                exc.signed = True  # the signature verified: Easemob sees a failed callback
                raise
    return adopted


def check_age(timestamp_ms: int, max_age_s: float) -> None:
    """Refuse a callback older than ``max_age_s`` or stamped in the future: its signature
    covers the timestamp, so a captured callback cannot be made younger."""
    age = time.time() - timestamp_ms / 1000
    if age > max_age_s:
        details = {"age_s": round(age), "max_age_s": max_age_s}
        raise Rejected(401, "callback too old (SINK_MAX_AGE_S)", details=details)
    if age < -FUTURE_TOLERANCE:
        details = {"ahead_s": round(-age)}
        raise Rejected(401, "timestamp in the future", details=details)
