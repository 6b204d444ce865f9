"""Every expected failure of the command line is one line on stderr and exit code 1."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest

from callback_sink.sink.topology import Topology
from callback_sink.sink.topology import delete as delete_topology
from tests.broker import queue_depth
from tests.processes import ROOT


def cli(*args: str, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("SINK_SECRETS", "SINK_SECRETS_FILE"):
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "callback_sink", *args],
        input=stdin, capture_output=True, cwd=ROOT, env=environment, timeout=60,
    )  # fmt: skip


def assert_one_line_failure(out: subprocess.CompletedProcess[bytes], *words: str) -> str:
    err = out.stderr.decode()
    assert "Traceback" not in err, err
    assert out.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("callback-sink: ")
    for word in words:
        assert word in err, err
    return err


def test_sign_with_a_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{callId: nope")
    assert_one_line_failure(cli("sign", str(tmp_path / "bad.json"), "--secret", "s"), "JSON")


def test_sign_on_standard_input_that_is_not_json_is_one_line() -> None:
    assert_one_line_failure(cli("sign", "-", "--secret", "s", stdin=b"not json"), "JSON")


def test_sign_with_a_document_without_call_id_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_text('{"timestamp": 1644914583273}')
    assert_one_line_failure(cli("sign", str(tmp_path / "doc.json"), "--secret", "s"), "callId")


def test_sign_with_a_missing_file_names_it(tmp_path: Path) -> None:
    assert_one_line_failure(cli("sign", str(tmp_path / "nope.json"), "--secret", "s"), "nope.json")


def test_send_to_a_closed_port_is_one_line() -> None:
    out = cli("send", "http://127.0.0.1:9/callbacks", "--secret", "s")
    assert_one_line_failure(out, "cannot connect to 127.0.0.1:9")


def test_dlq_list_with_the_broker_unreachable_is_one_line() -> None:
    out = cli("dlq", "list", SINK_AMQP_URL="amqp://guest:guest@127.0.0.1:9/")
    assert_one_line_failure(out, "RabbitMQ", "SINK_AMQP_URL")


def test_dlq_list_with_a_wrong_broker_password_says_so_in_one_line() -> None:
    out = cli("dlq", "list", SINK_AMQP_URL="amqp://guest:wrong-password@127.0.0.1:5672/")
    assert_one_line_failure(out, "SINK_AMQP_URL", "ACCESS_REFUSED")


def test_debug_shows_the_traceback_instead() -> None:
    out = cli("--debug", "dlq", "list", SINK_AMQP_URL="amqp://guest:guest@127.0.0.1:9/")
    assert out.returncode == 1
    assert "Traceback" in out.stderr.decode()


def test_a_worker_with_the_broker_unreachable_is_one_line() -> None:
    out = cli("worker", SINK_STARTUP_TIMEOUT_S="1", SINK_AMQP_URL="amqp://guest:guest@127.0.0.1:9/")
    assert_one_line_failure(out, "cannot start", "RabbitMQ")


async def test_a_worker_with_redis_unreachable_is_one_line(amqp_url: str) -> None:
    topology = Topology(f"test-{uuid.uuid4().hex[:12]}")
    try:
        out = cli("worker", SINK_DEDUP_URL="redis://127.0.0.1:9/0", SINK_STARTUP_TIMEOUT_S="1",
                  SINK_TOPOLOGY_PREFIX=topology.prefix, SINK_AMQP_URL=amqp_url)  # fmt: skip
        assert_one_line_failure(out, "cannot start", "SINK_DEDUP_URL", "127.0.0.1:9")
    finally:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await delete_topology(await connection.channel(), topology, [])


async def test_dlq_list_of_an_unknown_prefix_fails_and_creates_no_queue(amqp_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    out = cli("dlq", "list", SINK_TOPOLOGY_PREFIX=prefix, SINK_AMQP_URL=amqp_url)
    assert_one_line_failure(out, "no dead-letter queue", f"{prefix}.dead")
    with pytest.raises(Exception, match="NOT_FOUND"):
        await queue_depth(amqp_url, f"{prefix}.dead")
    with pytest.raises(Exception, match="NOT_FOUND"):
        await queue_depth(amqp_url, f"{prefix}.work")


def test_groups_list_of_a_missing_directory_fails_and_creates_no_file(tmp_path: Path) -> None:
    where = tmp_path / "typo" / "directory.sqlite3"
    out = cli("groups", "list", SINK_DIRECTORY_URL=f"sqlite:///{where}")
    assert_one_line_failure(out, "no group directory", str(where))
    assert not where.parent.exists()


def test_groups_list_of_a_file_without_the_table_fails_and_adds_no_table(tmp_path: Path) -> None:
    where = tmp_path / "empty.sqlite3"
    where.write_bytes(b"")
    out = cli("groups", "list", SINK_DIRECTORY_URL=f"sqlite:///{where}")
    assert_one_line_failure(out, "no table")
    assert where.read_bytes() == b""


def test_groups_show_of_an_unknown_group_is_one_line(tmp_path: Path) -> None:
    where = tmp_path / "directory.sqlite3"
    created = subprocess.run(
        [sys.executable, "-c", "import asyncio;"
         "from callback_sink.handlers.directory import open_directory;"
         "from callback_sink.handlers.directory.settings import DirectorySettings as S;"
         f"asyncio.run(open_directory(S(url='sqlite:///{where}')).__aenter__())"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    out = cli("groups", "show", "424242", SINK_DIRECTORY_URL=f"sqlite:///{where}")
    assert_one_line_failure(out, "no group 424242")
    listed = cli("groups", "list", SINK_DIRECTORY_URL=f"sqlite:///{where}")
    assert listed.returncode == 0 and b"0 group(s)" in listed.stdout
