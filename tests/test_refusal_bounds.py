"""A refusal's reason is a fixed string: what the request carried (the appkey it claims, its
call_id) is logged in separate fields cut to 200 characters, and counters and log sampling are
keyed by the reason, so a flood of distinct requests costs a few lines and no memory."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from structlog.testing import capture_logs

from callback_sink.ingress.app import EDGE
from callback_sink.ingress.refusals import FIELD_LENGTH
from callback_sink.sink.apps import parse_apps
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.conftest import callback, post, signed
from tests.ingress_server import serving
from tests.processes import SinkProcess

APPS = "acme#prod=secretA"
#: The flood of the issue: 1,000 refusals, each claiming its own 1 KB+ appkey, one of 1 MB.
FLOOD = 1000
HUGE_APPKEY = 1_000_000
#: The bounds the issue sets: the log grows by less than 1 MB, the ingress's RSS by less than
#: 5 MB (before: 1,000 distinct sampling keys and counters, and a 1 MB log line).
LOG_BOUND = 1_000_000
RSS_BOUND = 5 * 1024 * 1024


def claiming(appkey: str) -> bytes:
    """A callback of no app by its callId, claiming ``appkey`` in its unsigned field."""
    return signed(callback(f"nameless-{uuid.uuid4().hex}", appkey=appkey), "secretA")


async def test_an_unlisted_appkey_is_a_field_of_the_refusal_not_part_of_its_reason(
    settings: Settings,
) -> None:
    async for serve in serving(settings):
        ingress = await serve(secrets=(), apps=parse_apps(APPS))
        with capture_logs() as logs:
            for n in range(3):
                assert await post(ingress, claiming(f"acme#{n}{'x' * 1000}")) == 401
        lines = [line for line in logs if line["event"] == "callback.rejected"]
        assert {line["reason"] for line in lines} == {"the callback's app is not in SINK_APPS"}
        assert all(len(line["appkey"]) == FIELD_LENGTH for line in lines)
        refusals = ingress.app[EDGE].counters.refusals
        assert refusals == {"the callback's app is not in SINK_APPS": 3}


async def test_call_id_and_event_name_of_a_refusal_are_cut_to_200_characters(
    settings: Settings,
) -> None:
    async for serve in serving(settings):
        ingress: Any = await serve()
        long_id = "XXXX#XXXX_" + "9" * 240  # within the 255 bytes a callId may have
        with capture_logs() as logs:
            assert await post(ingress, signed(callback(long_id), "wrong-secret")) == 401
        [line] = [line for line in logs if line["event"] == "callback.rejected"]
        assert line["call_id"] == long_id[:FIELD_LENGTH]


def rss(pid: int) -> int:
    """Resident set size of ``pid``, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def log_bytes(sink: SinkProcess) -> int:
    return sum(len(orjson.dumps(line)) + 1 for line in sink.lines)


async def test_a_thousand_refusals_with_distinct_huge_appkeys_cost_little_log_and_memory(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "SINK_APPS": APPS,
        "SINK_AMQP_URL": settings.amqp_url,
        "SINK_TOPOLOGY_PREFIX": settings.topology_prefix,
        "SINK_SPOOL_DIR": str(tmp_path / "spool"),
        "SINK_PORT": str(port),
        "SINK_INGRESS_PROCESSES": "1",
    }
    sink = await SinkProcess("ingress", env).start("ingress.listening")
    url = f"http://127.0.0.1:{port}/callbacks"
    headers = {"Content-Type": "application/json"}
    try:
        [listening] = sink.events("ingress.listening")
        pid = int(str(listening["pid"]))
        # A new connection each: a keep-alive one closes after SINK_KEEPALIVE_MAX_REQUESTS.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def send(n: int, size: int) -> None:
                body = claiming(f"acme#{n}-" + "x" * size)
                async with http.post(url, data=body, headers=headers) as response:
                    assert response.status == 401
                    await response.read()

            log_before = log_bytes(sink)  # the warm-up's lines count too: a stricter bound
            for n in range(50):  # warm up: buffers, connections, the first log lines
                await send(-n - 1, 1024)
            rss_before = rss(pid)
            for n in range(FLOOD):
                await send(n, HUGE_APPKEY if n == FLOOD // 2 else 1024 + n)
        await sink.wait_for_line("callback.rejected.suppressed")
        rss_growth, log_growth = rss(pid) - rss_before, log_bytes(sink) - log_before
        print(f"{FLOOD} refusals: log +{log_growth} bytes, RSS +{rss_growth / 2**20:.2f} MiB")
        assert log_growth < LOG_BOUND
        assert rss_growth < RSS_BOUND
        assert max(len(orjson.dumps(line)) for line in sink.lines) < 2 * FIELD_LENGTH + 1000
    finally:
        assert await sink.stop() == 0


def test_no_refusal_reason_is_formatted_from_the_request() -> None:
    """Guard for the future: every reason the ingress raises is a literal string."""
    root = Path(__file__).resolve().parent.parent
    formatted = re.compile(r"Rejected\(\s*\d+,\s*(f[\"']|str\()")
    for source in [*(root / "ingress").glob("*.py"), *(root / "sink").glob("*.py")]:
        assert not formatted.search(source.read_text()), source
