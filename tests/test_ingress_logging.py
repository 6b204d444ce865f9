"""Under a flood of refusals the log stays readable: a few lines a second per reason, then one
summary with the count held back; accepted callbacks are never sampled; the publisher's
confirmed messages keep the format workers read."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from callback_sink.sink import headers
from callback_sink.sink.apps import parse_apps
from callback_sink.sink.events import PRESEND_RECORD_KEY
from callback_sink.sink.examples import now_ms
from callback_sink.sink.settings import Settings
from tests.broker import take_all
from tests.conftest import callback, post, signed
from tests.ingress_server import Serve, serving
from tests.waiting import until


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

        def accounted(status: int) -> int:
            lines = [x for x in logs if x["event"] == "callback.rejected" and x["status"] == status]
            summaries = [
                x["suppressed"]
                for x in logs
                if x["event"] == "callback.rejected.suppressed" and x["status"] == status
            ]
            return len(lines) + sum(summaries)

        # Every window over, its summary written: each refusal is either logged or counted.
        await until(lambda: accounted(401) == accounted(415) == 40, what="every window's summary")
    for status in (401, 415):
        lines = [x for x in logs if x["event"] == "callback.rejected" and x["status"] == status]
        summaries = [
            x
            for x in logs
            if x["event"] == "callback.rejected.suppressed" and x["status"] == status
        ]
        assert 3 <= len(lines) <= 3 * (int(seconds) + 2)
        assert len(lines) + sum(x["suppressed"] for x in summaries) == 40
        # The 401's body parsed: its sampled lines name it; the 415's body was never read.
        assert all(("call_id" in x) == (status == 401) for x in lines)


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


def _refusal(logs: list[dict[str, object]]) -> dict[str, object]:
    [line] = [x for x in logs if x["event"] == "callback.rejected"]
    assert line["log_level"] == "warning"
    return line


async def test_a_refusal_of_a_callback_that_parsed_names_its_call_id_and_event_name(
    serve: Serve,
) -> None:
    ingress = await serve(max_age_s=3600)
    apps = await serve(secrets=(), apps=parse_apps("acme#prod=secretA"))
    wrong_secret = callback("XXXX#XXXX_wrong", operation="kick")
    too_old = callback("XXXX#XXXX_old", operation="kick", timestamp=now_ms() - 7200 * 1000)
    forged_kind = callback("XXXX#XXXX_forged", operation="kick")
    forged_kind[PRESEND_RECORD_KEY] = {"valid": True}
    unlisted = callback("acme#dev_unlisted", operation="kick")
    cases = [
        (ingress, signed(wrong_secret, "wrong-secret"), 401, "XXXX#XXXX_wrong", "muc:kick"),
        (ingress, signed(too_old), 401, "XXXX#XXXX_old", "muc:kick"),
        (ingress, signed(forged_kind), 400, "XXXX#XXXX_forged", "presend:verdict"),
        (apps, signed(unlisted, "secretA"), 401, "acme#dev_unlisted", "muc:kick"),
    ]
    for client, body, status, call_id, event_name in cases:
        with capture_logs() as logs:
            assert await post(client, body) == status
        line = _refusal(logs)
        assert (line["status"], line["call_id"], line["event_name"]) == (
            status,
            call_id,
            event_name,
        )


async def test_a_refusal_of_a_body_that_did_not_parse_names_no_callback_but_says_why(
    serve: Serve,
) -> None:
    ingress = await serve()
    for body, why in [(b'{"callId": "XXXX#XXXX_1"', "not valid JSON"), (b"{}", "missing field")]:
        with capture_logs() as logs:
            assert await post(ingress, body) == 400
        line = _refusal(logs)
        assert "call_id" not in line and "event_name" not in line
        assert why in str(line["reason"])
