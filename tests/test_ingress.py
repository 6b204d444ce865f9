"""The ingress answers each kind of input with its status, and only 200 reaches the queue."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from callback_sink.sink.settings import Settings
from tests.broker import queue_depth, take_all
from tests.conftest import SECRET, callback, post, signed

Client = TestClient[Any, Any]


async def test_a_signed_callback_is_answered_200_after_it_is_in_the_work_queue(
    ingress: Client, settings: Settings
) -> None:
    body = signed(callback("XXXX#XXXX_1"))
    response = await ingress.post(
        "/callbacks", data=body, headers={"Content-Type": "application/json; charset=UTF-8"}
    )
    assert response.status == 200
    text = await response.text()
    assert len(text) < 1000
    [message] = await take_all(settings.amqp_url, f"{settings.topology_prefix}.work", 1)
    assert message.body == body
    assert message.message_id == "XXXX#XXXX_1"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2
    assert message.routing_key == "muc.apply"


async def test_any_configured_secret_validates_a_callback(ingress: Client) -> None:
    assert await post(ingress, signed(callback(), "another-rule-secret")) == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (signed(callback(), "wrong-secret"), {}, 401, "signature"),
        (signed(callback())[:-7], {}, 400, "not valid JSON"),
        (b"[1, 2, 3]", {}, 400, "JSON list"),
        (orjson.dumps({"callId": "x", "timestamp": 1}), {}, 400, "security"),
        (signed(callback()), {"Content-Type": "text/plain"}, 415, "content type"),
        (signed(callback()), {"Content-Type": "application/x-www-form-urlencoded"}, 415, "type"),
    ],
    ids=["bad-signature", "truncated", "array", "missing-field", "text-plain", "form"],
)
async def test_bad_input_gets_its_status_a_log_line_and_never_reaches_the_queue(
    ingress: Client,
    settings: Settings,
    body: bytes,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    with capture_logs() as logs:
        assert await post(ingress, body, **headers) == status
    rejected = [line for line in logs if line["event"] == "callback.rejected"]
    assert len(rejected) == 1
    assert rejected[0]["status"] == status
    assert reason in rejected[0]["reason"] + rejected[0].get("detail", "")
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 0


async def test_an_oversized_body_is_refused_413_from_its_content_length(
    ingress: Client, settings: Settings
) -> None:
    big = signed(callback(padding="x" * settings.body_limit))
    with capture_logs() as logs:
        assert await post(ingress, big) == 413
    assert any(line["event"] == "callback.rejected" and line["status"] == 413 for line in logs)
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 0


async def test_an_oversized_chunked_body_is_refused_413_while_streaming(
    ingress: Client, settings: Settings
) -> None:
    async def chunks() -> Any:
        for _ in range(settings.body_limit // 65536 + 2):
            yield b" " * 65536

    with capture_logs() as logs:
        response = await ingress.post(
            "/callbacks", data=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status == 413
    assert any(line["event"] == "callback.rejected" and line["status"] == 413 for line in logs)
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 0


async def test_the_signature_and_the_secret_never_appear_in_a_log_line(ingress: Client) -> None:
    good = signed(callback())
    bad = signed(callback(), "wrong-secret")
    with capture_logs() as logs:
        await post(ingress, good)
        await post(ingress, bad)
    text = str(logs)
    for secret_value in (SECRET, orjson.loads(good)["security"], orjson.loads(bad)["security"]):
        assert secret_value not in text


async def test_health_and_readiness_answer(ingress: Client) -> None:
    assert (await ingress.get("/healthz")).status == 200
    ready = await ingress.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["broker"] is True
