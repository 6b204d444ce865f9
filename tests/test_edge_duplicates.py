"""A captured callback re-posted with padding fills neither the spool nor the queue: each
ingress process remembers what it made durable lately and answers a re-post 200 without
storing it again."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callback_sink.ingress.app import EDGE, SPOOL
from callback_sink.ingress.recent import EVENT, KEY_LENGTH, RecentCallbacks
from callback_sink.sink.events import from_document
from callback_sink.sink.settings import Settings
from tests.broker import queue_depth
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving

#: A closed port: every callback goes to the spool, as in an outage.
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"
#: The issue's replay: 70 re-posts of one captured callback, each padded with 1 MiB - 4 KiB
#: of unsigned fields (just under the default SINK_BODY_LIMIT of 1 MiB).
REPLAYS = 70
PADDING = 1024 * 1024 - 4096


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


async def test_padded_replays_of_one_callback_during_an_outage_leave_one_spool_record(
    serve: Serve,
) -> None:
    ingress = await serve(amqp_url=UNREACHABLE, spool_max_bytes=64 * 1024 * 1024)
    captured = callback("XXXX#XXXX_captured")
    assert await post(ingress, signed(captured)) == 200
    spool = ingress.app[SPOOL]
    assert spool.records == 1
    with capture_logs() as logs:
        for n in range(REPLAYS):
            padded = signed({**captured, "padding": str(n) * (PADDING // len(str(n)))})
            assert await post(ingress, padded) == 200
    assert spool.records == 1
    assert spool.bytes < PADDING  # the first, small record only
    assert ingress.app[EDGE].recent.duplicates == REPLAYS
    duplicates = [line for line in logs if line["event"] == EVENT]
    assert 1 <= len(duplicates) <= ingress.app[EDGE].settings.reject_log_rate * 2
    assert duplicates[0]["call_id"] == "XXXX#XXXX_captured"
    assert duplicates[0]["log_level"] == "info"
    assert await post(ingress, signed(callback("XXXX#XXXX_genuine"))) == 200
    assert spool.records == 2


async def test_a_re_post_after_a_publish_is_not_queued_twice(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve()
    body = signed(callback("XXXX#XXXX_once"))
    assert [await post(ingress, body) for _ in range(3)] == [200, 200, 200]
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 1


async def test_a_callback_refused_503_is_stored_when_retried(serve: Serve) -> None:
    body = signed(callback("XXXX#XXXX_retried"))
    full = await serve(amqp_url=UNREACHABLE, spool_max_bytes=10)
    assert await post(full, body) == 503
    assert await post(full, body) == 503  # not remembered: it was never made durable


def test_offline_copies_to_other_recipients_are_not_duplicates() -> None:
    recent = RecentCallbacks(10, 5)
    offline = {"callId": "XXXX#XXXX_off", "timestamp": 1, "security": "s",
               "eventType": "chat_offline", "chat_type": "chat", "from": "a"}  # fmt: skip
    recent.remember(from_document({**offline, "to": "bob"}))
    assert recent.repeated(from_document({**offline, "to": "bob"}))
    assert not recent.repeated(from_document({**offline, "to": "carol"}))
    recent.remember(from_document({**offline, "to": "x" * 1_000_000}))
    assert recent.repeated(from_document({**offline, "to": "x" * 1_000_000}))
    assert all(len(key) <= KEY_LENGTH for key in recent._keys)


def test_the_set_is_bounded_by_its_size_oldest_forgotten_first() -> None:
    recent = RecentCallbacks(3, 5)
    events = [from_document(callback(f"XXXX#XXXX_{n}", security="s")) for n in range(5)]
    for event in events:
        recent.remember(event)
    assert len(recent) == 3
    assert [recent.repeated(event) for event in events] == [False, False, True, True, True]
    off = RecentCallbacks(0, 5)
    off.remember(events[0])
    assert len(off) == 0 and not off.repeated(events[0])
