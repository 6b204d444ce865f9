"""TLS to RabbitMQ (``amqps://``) and Redis (``rediss://``), against servers of the test's own.

A throw-away CA signs a server certificate (``localhost``, ``127.0.0.1``) and a client one
(:mod:`tests.tls_servers`); a ``redis-server`` and a second RabbitMQ node listen with TLS only
and demand the client certificate (mutual TLS). The shared broker and Redis are not involved,
except as the plain broker of the Redis-only negative case.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from callback_sink.sink.amqp import connect_first
from callback_sink.sink.errors import ConfigError, TlsRefused
from callback_sink.sink.permanent import permanent
from callback_sink.sink.settings import Settings
from callback_sink.sink.tls import amqp_context, describe, redis_tls_kwargs
from callback_sink.testing.ports import free_port
from callback_sink.worker.redis_store import RedisStore
from tests.conftest import SECRET, callback, signed
from tests.needs import missing
from tests.processes import SinkProcess
from tests.recording import read_records
from tests.tls_servers import Pki, TlsBroker, make_pki, rabbitmq_missing, redis_tls

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        missing("no openssl CLI to make the test CA")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def redis_port(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS-only redis-server of this module's own (mutual TLS)."""
    if shutil.which("redis-server") is None:
        missing("no redis-server")
    with redis_tls(pki, tmp_path_factory.mktemp("redis")) as port:
        yield port


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A TLS-only RabbitMQ node of this module's own (mutual TLS); boots in about 8 s."""
    if (why := rabbitmq_missing()) is not None:
        missing(why)
    with TlsBroker(pki, tmp_path_factory.mktemp("rabbit")) as node:
        yield node


def amqp_env(pki: Pki, url: str, ca: Path | None = None) -> dict[str, str]:
    return {
        "SINK_AMQP_URL": url,
        "SINK_AMQP_TLS_CA_FILE": str(ca or pki.ca),
        "SINK_AMQP_TLS_CERT_FILE": str(pki.client_cert),
        "SINK_AMQP_TLS_KEY_FILE": str(pki.client_key),
    }


def dedup_env(pki: Pki, port: int, ca: Path | None = None) -> dict[str, str]:
    return {
        "SINK_DEDUP_URL": f"rediss://localhost:{port}/0",
        "SINK_DEDUP_TLS_CA_FILE": str(ca or pki.ca),
        "SINK_DEDUP_TLS_CERT_FILE": str(pki.client_cert),
        "SINK_DEDUP_TLS_KEY_FILE": str(pki.client_key),
    }


# --- settings -------------------------------------------------------------------------------


def test_a_client_certificate_without_its_key_is_refused_naming_the_key_variable(
    pki: Pki,
) -> None:
    env = amqp_env(pki, "amqps://localhost:5671/")
    del env["SINK_AMQP_TLS_KEY_FILE"]
    with pytest.raises(ConfigError, match="SINK_AMQP_TLS_KEY_FILE is required"):
        Settings.from_env(env)


def test_a_key_without_its_certificate_is_refused_naming_the_certificate_variable(
    pki: Pki,
) -> None:
    env = dedup_env(pki, 6380)
    del env["SINK_DEDUP_TLS_CERT_FILE"]
    with pytest.raises(ConfigError, match="SINK_DEDUP_TLS_CERT_FILE is required"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "variable", "url_variable"),
    [
        ({"SINK_AMQP_URL": "amqp://localhost/"}, "SINK_AMQP_TLS_CA_FILE", "SINK_AMQP_URL"),
        ({"SINK_DEDUP_URL": "redis://localhost/0"}, "SINK_DEDUP_TLS_CA_FILE", "SINK_DEDUP_URL"),
    ],
)
def test_a_tls_file_with_a_plain_url_is_refused_naming_both(
    pki: Pki, env: dict[str, str], variable: str, url_variable: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable} is set but {url_variable} is not"):
        Settings.from_env({**env, variable: str(pki.ca)})


def test_an_unreadable_ca_file_is_refused_at_start_naming_it(tmp_path: Path) -> None:
    env = {"SINK_AMQP_URL": "amqps://localhost/", "SINK_AMQP_TLS_CA_FILE": str(tmp_path / "no")}
    with pytest.raises(ConfigError, match=r"SINK_AMQP_TLS_CA_FILE: cannot read .*/no: No such"):
        Settings.from_env(env)


def test_a_ca_file_that_holds_no_certificate_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    env = {"SINK_DEDUP_URL": "rediss://localhost/0", "SINK_DEDUP_TLS_CA_FILE": str(junk)}
    with pytest.raises(ConfigError, match=r"SINK_DEDUP_TLS_CA_FILE: .* no usable PEM"):
        Settings.from_env(env)


def test_a_certificate_and_a_key_that_do_not_match_are_refused(pki: Pki) -> None:
    env = {**amqp_env(pki, "amqps://localhost/"), "SINK_AMQP_TLS_KEY_FILE": str(pki.server_key)}
    with pytest.raises(ConfigError, match="SINK_AMQP_TLS_CERT_FILE / SINK_AMQP_TLS_KEY_FILE"):
        Settings.from_env(env)


def test_plain_urls_use_no_tls_and_tls_urls_get_the_files(pki: Pki) -> None:
    plain = Settings.from_env({})
    assert amqp_context(plain) is None
    assert redis_tls_kwargs(plain) == {}
    tls = Settings.from_env({**amqp_env(pki, "amqps://localhost/"), **dedup_env(pki, 6380)})
    context = amqp_context(tls)
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert amqp_context(tls) is context, "one context per process"
    assert redis_tls_kwargs(tls) == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": str(pki.ca),
        "ssl_certfile": str(pki.client_cert),
        "ssl_keyfile": str(pki.client_key),
    }
    unchecked = Settings.from_env({"SINK_AMQP_URL": "amqps://h/", "SINK_DEDUP_URL": "rediss://h/"})
    assert redis_tls_kwargs(unchecked)["ssl_check_hostname"] is True
    no_names = Settings.from_env(
        {"SINK_AMQP_URL": "amqps://h/", "SINK_AMQP_TLS_CHECK_HOSTNAME": "false"}
    )
    context = amqp_context(no_names)
    assert context is not None and not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED, "the chain is still verified"


def test_an_untrusted_certificate_is_a_permanent_error_naming_the_server() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    assert "not trusted" in describe(error)
    assert permanent(TlsRefused("rabbit:5671", describe(error))) == (
        "TLS with rabbit:5671 failed: the server's certificate is not trusted "
        "(unable to get local issuer certificate): check the CA file"
    )
    assert permanent(ssl.SSLEOFError(8, "EOF")) is None, "a peer gone mid-handshake may return"
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_message = "Hostname mismatch, certificate is not valid for 'rabbit'."
    assert describe(mismatch).startswith("the server's certificate does not name its host")


async def test_amqps_to_a_plain_port_is_refused_as_not_speaking_tls(amqp_url: str) -> None:
    plain = URL(amqp_url)
    settings = Settings.from_env({"SINK_AMQP_URL": str(plain.with_scheme("amqps"))})
    with pytest.raises(TlsRefused, match=f"{plain.host}:{plain.port} .* does not speak TLS"):
        await connect_first(settings.amqp_urls, ssl_context=amqp_context(settings))


# --- Redis ----------------------------------------------------------------------------------


async def test_the_dedup_store_over_rediss_with_the_ca_and_a_client_certificate_works(
    pki: Pki, redis_port: int
) -> None:
    settings = Settings.from_env(dedup_env(pki, redis_port))
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    store = RedisStore(settings.dedup_url, prefix, tls=redis_tls_kwargs(settings))
    try:
        await store.ping()
        first = await store.claim("key", "handler", lease=5)
        again = await store.claim("key", "handler", lease=5)
        assert (first.state.name, again.state.name) == ("CLAIMED", "BUSY")
    finally:
        await store.close()


async def test_a_worker_with_a_wrong_dedup_ca_exits_at_once_naming_the_redis_host(
    pki: Pki, redis_port: int, amqp_url: str, tmp_path: Path
) -> None:
    env = {
        **dedup_env(pki, redis_port, ca=pki.other_ca),
        "SINK_AMQP_URL": amqp_url,
        "SINK_TOPOLOGY_PREFIX": f"tls-{uuid.uuid4().hex[:8]}",
        "SINK_STARTUP_TIMEOUT_S": "60",
    }
    line = await failed_start("worker", env)
    assert f"localhost:{redis_port}" in line and "not trusted" in line, line
    assert "SINK_DEDUP_URL" in line and "(not retried)" in line, line


# --- RabbitMQ -------------------------------------------------------------------------------


async def test_a_callback_through_amqps_and_rediss_is_handled_once(
    pki: Pki, broker: TlsBroker, redis_port: int, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **amqp_env(pki, broker.url),
        **dedup_env(pki, redis_port),
        "SINK_TOPOLOGY_PREFIX": f"tls-{uuid.uuid4().hex[:8]}",
        "SINK_SECRETS": SECRET,
        "SINK_PORT": str(port),
        "SINK_INGRESS_PROCESSES": "1",
        "SINK_SPOOL_DIR": str(tmp_path / "spool"),
        "SINK_HANDLERS": "tests.recording",
        "SINK_TEST_RECORD_DIR": str(tmp_path),
        "SINK_EDGE_DEDUP_SIZE": "0",  # the re-post reaches the worker: Redis dedups it
    }
    ingress, worker = SinkProcess("ingress", env), SinkProcess("worker", env)
    url = f"http://127.0.0.1:{port}/callbacks"
    try:
        await ingress.start("ingress.connected", within=60)
        await worker.start("worker.started", within=60)
        body = signed(callback())
        async with aiohttp.ClientSession() as http:
            for _ in range(2):  # the second post is a re-send: queued, never run again
                async with http.post(url, data=body, headers=JSON) as answer:
                    assert answer.status == 200
        await worker.wait_for_line("callback.handled", count=4, within=60)  # 2 handlers, 2 posts
        outcomes = sorted(str(line["outcome"]) for line in worker.events("callback.handled"))
        assert outcomes == ["duplicate", "duplicate", "ok", "ok"]
        assert set(read_records(tmp_path).values()) == {1}
        assert len(read_records(tmp_path)) == 2
    finally:
        await asyncio.gather(ingress.kill(), worker.kill())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("wrong CA", "the server's certificate is not trusted"),
        ("no client certificate", "the server refused us"),
    ],
)
async def test_a_worker_refused_by_the_brokers_tls_exits_at_once_naming_the_host(
    pki: Pki, broker: TlsBroker, change: str, expected: str
) -> None:
    env = {
        **amqp_env(pki, broker.url, ca=pki.other_ca if change == "wrong CA" else None),
        "SINK_TOPOLOGY_PREFIX": f"tls-{uuid.uuid4().hex[:8]}",
        "SINK_STARTUP_TIMEOUT_S": "60",
    }
    if change == "no client certificate":
        env["SINK_AMQP_TLS_CERT_FILE"] = env["SINK_AMQP_TLS_KEY_FILE"] = ""
    line = await failed_start("worker", env)
    assert f"TLS with localhost:{broker.port} failed: {expected}" in line, line
    assert "SINK_AMQP_URL" in line and "(not retried)" in line, line


async def test_an_ingress_refused_by_the_brokers_tls_says_why_at_error_and_keeps_serving(
    pki: Pki, broker: TlsBroker, tmp_path: Path
) -> None:
    env = {
        **amqp_env(pki, broker.url, ca=pki.other_ca),
        "SINK_TOPOLOGY_PREFIX": f"tls-{uuid.uuid4().hex[:8]}",
        "SINK_SECRETS": SECRET,
        "SINK_PORT": str(free_port()),
        "SINK_INGRESS_PROCESSES": "1",
        "SINK_SPOOL_DIR": str(tmp_path / "spool"),
    }
    ingress = SinkProcess("ingress", env)
    try:
        await ingress.start("ingress.broker_refused", within=60)
        (line,) = ingress.events("ingress.broker_refused")[:1]
        assert line["level"] == "error" and line["variable"] == "SINK_AMQP_URL"
        assert f"TLS with localhost:{broker.port} failed" in str(line["reason"]), line
        assert ingress.process is not None and ingress.process.returncode is None
    finally:
        await ingress.kill()


async def failed_start(command: str, env: dict[str, str]) -> str:
    """Start ``command``, which must exit 1 well before its start-up time-out; its one error
    line (no traceback, no password)."""
    process = SinkProcess(command, env)
    await process.start(None)
    try:
        assert process.process is not None
        assert await asyncio.wait_for(process.process.wait(), 30) == 1
        await process.stop()  # collects its last lines
    finally:
        await process.kill()
    texts = [str(line.get("text")) for line in process.lines if line.get("event") == "stdout"]
    errors = [text for text in texts if text.startswith("callback-sink: ")]
    assert len(errors) == 1, texts
    assert not any("Traceback" in text for text in texts), texts
    assert "guest@" not in errors[0] and ":guest" not in errors[0], errors[0]
    return errors[0]
