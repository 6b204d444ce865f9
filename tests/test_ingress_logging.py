"""Under a flood of refusals the log stays readable: a few lines a second per reason, then one
summary with the count held back; accepted callbacks are never sampled; the publisher's
confirmed messages keep the format workers read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callback_sink.sink import headers
from callback_sink.sink.settings import Settings
from tests.broker import take_all
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


async def test_a_flood_of_refusals_is_sampled_per_reason_and_summarised(serve: Serve) -> None:
    ingress = await serve(reject_log_rate=3)
    forged = signed(callback(), "wrong-secret")
    with capture_logs() as logs:
        started = time.monotonic()
        for _ in range(40):
            assert await post(ingress, forged) == 401
            assert await post(ingress, forged, **{"Content-Type": "text/plain"}) == 415
        seconds = time.monotonic() - started
        await asyncio.sleep(2.2)  # every window over, its summary written
    for status in (401, 415):
        lines = [x for x in logs if x["event"] == "callback.rejected" and x["status"] == status]
        summaries = [
            x
            for x in logs
            if x["event"] == "callback.rejected.suppressed" and x["status"] == status
        ]
        assert 3 <= len(lines) <= 3 * (int(seconds) + 2)
        assert len(lines) + sum(x["suppressed"] for x in summaries) == 40


async def test_accepted_callbacks_are_never_sampled(serve: Serve) -> None:
    ingress = await serve(reject_log_rate=1)
    with capture_logs() as logs:
        for _ in range(20):
            assert await post(ingress, signed(callback())) == 200
    accepted = [line for line in logs if line["event"] == "callback.accepted"]
    assert len(accepted) == 20
    assert all(line["call_id"] and line["event_name"] == "muc:apply" for line in accepted)


async def test_a_published_message_carries_the_format_workers_read(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve()
    body = signed(callback("XXXX#XXXX_format", operation="kick"))
    assert await post(ingress, body) == 200
    [message] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.work", 1)
    assert (message.body, message.message_id) == (body, "XXXX#XXXX_format")
    assert (message.content_type, message.delivery_mode) == ("application/json", 2)
    assert message.headers[headers.EVENT] == "muc:kick"
    assert message.priority == 0  # as aio_pika.Message wrote it
    assert message.routing_key == "muc.kick"
