"""The ingress refuses replays outside its window and clients outside its networks, and keeps
request bodies and internals out of logs and answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from callback_sink.ingress.app import create_app
from callback_sink.sink.errors import ConfigError
from callback_sink.sink.examples import now_ms
from callback_sink.sink.settings import DAY, Settings
from tests.broker import queue_depth
from tests.conftest import SECRET, callback, post, signed
from tests.ingress_server import Serve, serving
from tests.waiting import until


@pytest.fixture
async def serve(settings: Settings) -> AsyncIterator[Serve]:
    async for start in serving(settings):
        yield start


def _rejected(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "callback.rejected"]


async def test_a_callback_older_than_the_maximum_age_is_refused_401_and_never_queued(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve(max_age_s=3600)
    stale = signed(callback(timestamp=now_ms() - 2 * 3600 * 1000))
    with capture_logs() as logs:
        assert await post(ingress, stale) == 401
    [line] = _rejected(logs)
    assert "too old" in line["reason"]
    assert await post(ingress, signed(callback())) == 200
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 1


async def test_a_callback_stamped_in_the_future_is_refused(serve: Serve) -> None:
    ingress = await serve()
    ahead = signed(callback(timestamp=now_ms() + 3600 * 1000))
    with capture_logs() as logs:
        assert await post(ingress, ahead) == 401
    assert "in the future" in _rejected(logs)[0]["reason"]


async def test_a_maximum_age_of_zero_accepts_an_old_callback(serve: Serve) -> None:
    ingress = await serve(max_age_s=0)
    assert await post(ingress, signed(callback(timestamp=1644914583273))) == 200


def test_the_maximum_age_must_stay_below_the_dedup_ttl() -> None:
    with pytest.raises(ConfigError, match=r"SINK_MAX_AGE_S .* SINK_DEDUP_TTL"):
        Settings.from_env({"SINK_MAX_AGE_S": str(5 * DAY)})
    assert Settings.from_env({}).max_age_s < Settings.from_env({}).dedup_ttl


async def test_a_client_outside_the_allowed_networks_is_closed_before_its_request_is_read(
    serve: Serve, settings: Settings
) -> None:
    ingress = await serve(allowed_networks=Settings.from_env(
        {"SINK_ALLOWED_NETWORKS": "10.0.0.0/8, 2001:db8::/32"}).allowed_networks)  # fmt: skip
    headers = {"Content-Type": "application/json"}
    with capture_logs() as logs:
        sent = ingress.post("/callbacks", data=signed(callback()), headers=headers)
        assert await _status(sent) is None  # closed at accept: no slot, nothing read
    [line] = _rejected(logs)
    assert line["status"] is None and line["reason"] == "client is not in SINK_ALLOWED_NETWORKS"
    assert line["remote"] == "127.0.0.1"
    assert await queue_depth(settings.amqp_url, f"{settings.topology_prefix}.work") == 0
    allowed = await serve(allowed_networks=Settings.from_env(
        {"SINK_ALLOWED_NETWORKS": "127.0.0.0/8"}).allowed_networks)  # fmt: skip
    assert await post(allowed, signed(callback())) == 200


async def _status(request: Any) -> int | None:
    """The status of an answer, or None when the connection was closed unanswered."""
    try:
        async with request as response:
            return int(response.status)
    except aiohttp.ClientConnectionError:
        return None


async def test_the_allow_list_covers_the_whole_port_probes_and_metrics_included(
    serve: Serve,
) -> None:
    # SINK_ALLOWED_NETWORKS guards the port, not only the callback paths: /readyz tells the
    # spool's depth and the broker's state, /metrics the traffic. Whoever probes or scrapes
    # the ingress must be in it (docs/reference/security.md).
    networks = "SINK_ALLOWED_NETWORKS"
    outside = await serve(allowed_networks=Settings.from_env(
        {networks: "10.0.0.0/8"}).allowed_networks)  # fmt: skip
    inside = await serve(allowed_networks=Settings.from_env(
        {networks: "127.0.0.0/8"}).allowed_networks)  # fmt: skip
    for path in ("/healthz", "/readyz", "/metrics"):
        assert await _status(outside.get(path)) in (403, None), path
        assert await _status(inside.get(path)) == 200, path


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "status"),
    [
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", 200),  # right-most untrusted is allowed
        ("127.0.0.1", "203.0.113.7, 198.51.100.1", 403),  # the client wrote the left part
        ("127.0.0.1, 198.51.100.0/24", "203.0.113.7, 198.51.100.1", 200),  # two proxies
        ("", "198.51.100.1, 203.0.113.7", None),  # no trusted proxy: closed at accept
        ("127.0.0.1", "not-an-address", 403),
    ],
    ids=["one-proxy", "forged-left", "two-proxies", "untrusted-peer", "garbage"],
)
async def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    serve: Serve, trusted: str, forwarded_for: str, status: int | None
) -> None:
    parsed = Settings.from_env(
        {"SINK_ALLOWED_NETWORKS": "203.0.113.0/24", "SINK_TRUSTED_PROXIES": trusted}
    )
    ingress = await serve(
        allowed_networks=parsed.allowed_networks, trusted_proxies=parsed.trusted_proxies
    )
    headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
    sent = ingress.post("/callbacks", data=signed(callback()), headers=headers)
    assert await _status(sent) == status


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        (["198.51.100.1, 203.0.113.7"], 200),  # one line: the right-most hop is the client
        (["203.0.113.7", "198.51.100.1"], 403),  # HAProxy appends a line: the forged first
        (["198.51.100.1", "203.0.113.7"], 200),  # the proxy's line names the allowed client
        (["203.0.113.7, 10.9.9.9", "198.51.100.1"], 403),  # the right-most untrusted hop
    ],
    ids=["single-line", "forged-first-line", "appended-line", "several-hops"],
)
async def test_every_x_forwarded_for_line_is_read_and_the_right_most_untrusted_hop_is_the_client(
    serve: Serve, lines: list[str], status: int
) -> None:
    parsed = Settings.from_env(
        {"SINK_ALLOWED_NETWORKS": "203.0.113.0/24", "SINK_TRUSTED_PROXIES": "127.0.0.1"}
    )
    ingress = await serve(
        allowed_networks=parsed.allowed_networks, trusted_proxies=parsed.trusted_proxies
    )
    headers = [("Content-Type", "application/json"), *(("X-Forwarded-For", v) for v in lines)]
    response = await ingress.post("/callbacks", data=signed(callback()), headers=headers)
    await response.read()
    assert response.status == status


async def test_a_request_aiohttp_cannot_parse_never_puts_its_body_in_a_log_line(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    ingress = await serve()
    body = signed(callback())
    security = orjson.loads(body)["security"]
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
    head = b"POST /callbacks HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n\r\n"
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        writer.write(head + body)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await until(lambda: logs, what="the request error's log line")
    assert [line["event"] for line in logs] == ["http.request_error"]
    text = str(logs) + caplog.text + str([r.exc_info for r in caplog.records])
    assert security not in text and "chat_type" not in text


async def test_a_503_tells_the_caller_nothing_of_the_spool_or_the_broker(
    serve: Serve, tmp_path: Path
) -> None:
    ingress = await serve(amqp_url="amqp://guest:guest@127.0.0.1:1/", spool_max_bytes=10)
    with capture_logs() as logs:
        response = await ingress.post(
            "/callbacks", data=signed(callback()), headers={"Content-Type": "application/json"}
        )
        text = await response.text()
    assert response.status == 503
    assert "spool" not in text and str(tmp_path) not in text and "broker" not in text
    [line] = [line for line in logs if line["event"] == "spool.full"]
    assert line["reason"] == "spool full" and line["broker_error"]


async def test_short_secrets_are_warned_about_once_without_being_logged(
    settings: Settings,
) -> None:
    with capture_logs() as logs:
        create_app(replace(settings, secrets=("short", "a-long-enough-secret-0123456789")))
    [line] = [line for line in logs if line["event"] == "ingress.short_secrets"]
    assert line["count"] == 1
    assert "short" not in str({k: v for k, v in line.items() if k != "event"})
    assert SECRET not in str(logs)


def test_a_commented_out_secret_with_leading_spaces_is_not_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_text("current-secret-0123456789\n  # revoked-secret-0123456789\n\n")
    settings = Settings.from_env({"SINK_SECRETS_FILE": str(path)})
    assert settings.secrets == ("current-secret-0123456789",)
