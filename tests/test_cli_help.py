"""The command line explains itself: --version, --help with defaults and SINK_ variables,
and `config` showing the effective settings with every secret masked."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from callback_sink.environment import for_command
from tests.processes import ROOT

COMMANDS = [
    "ingress", "worker", "run", "sign", "send", "config", "emulate", "dlq", "dlq list",
    "dlq show", "dlq replay", "dlq purge", "groups", "groups list", "groups show",
]  # fmt: skip
#: One option per command whose default --help must show.
DEFAULTS = {
    "dlq list": "--limit LIMIT      show at most this many (default: 50)",
    "dlq show": "(default: 50)",
}


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "callback_sink", *args],
        capture_output=True, cwd=ROOT, env=environment, timeout=60,
    )  # fmt: skip


def test_version_prints_the_installed_distributions_version() -> None:
    out = cli("--version")
    assert out.returncode == 0
    assert (
        out.stdout.decode().strip()
        == f"callback-sink {importlib.metadata.version('callback-sink')}"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_lists_the_sink_variables_that_configure_it(command: str) -> None:
    out = cli(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "environment (see docs/reference/settings.md):" in text
    assert "  SINK_" in text
    assert "--debug" in text
    if command in DEFAULTS:
        assert DEFAULTS[command] in " ".join(text.split()) or DEFAULTS[command] in text


def test_the_dlq_commands_help_names_the_broker_variables_with_their_defaults() -> None:
    text = cli("dlq", "list", "--help").stdout.decode()
    assert "SINK_AMQP_URL" in text and "amqp://guest:***@127.0.0.1:5672/" in text
    assert "SINK_TOPOLOGY_PREFIX" in text and "(default: callback-sink)" in text


def test_config_prints_every_setting_with_secrets_and_passwords_masked() -> None:
    out = cli(
        "config",
        SINK_SECRETS="rule-one-secret,rule-two-secret",
        SINK_AMQP_URL="amqp://sink:broker-password@rabbit:5672/",
        SINK_DEDUP_URL="redis://:redis-password@redis:6379/0",
        SINK_EASEMOB_HOST="a1.easemob.com", SINK_EASEMOB_ORG="o", SINK_EASEMOB_APP="a",
        SINK_EASEMOB_CLIENT_ID="id", SINK_EASEMOB_CLIENT_SECRET="rest-secret",
        SINK_PREFETCH="7",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for secret in ("rule-one-secret", "rule-two-secret", "broker-password", "redis-password",
                   "rest-secret"):  # fmt: skip
        assert secret not in text
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "*** (2 secrets)" in lines["SINK_SECRETS"]
    assert "amqp://sink:***@rabbit:5672/" in lines["SINK_AMQP_URL"]
    assert "redis://:***@redis:6379/0" in lines["SINK_DEDUP_URL"]
    assert lines["SINK_PREFETCH"].split()[1:] == ["7", "[env]"]
    assert lines["SINK_CONCURRENCY"].split()[1:] == ["32", "[default]"]
    assert "SINK_DIRECTORY_URL" in lines and "SINK_EMULATOR_PORT" in lines


def test_config_masks_query_passwords_and_secrets_that_look_like_urls() -> None:
    out = cli(
        "config", "--json",
        SINK_SECRETS="rule-secret",
        SINK_AMQP_URL="amqp://sink@rabbit:5672/?password=query-password&heartbeat=5",
        SINK_EASEMOB_HOST="a1.easemob.com", SINK_EASEMOB_ORG="o", SINK_EASEMOB_APP="a",
        SINK_EASEMOB_CLIENT_ID="id", SINK_EASEMOB_CLIENT_SECRET="rest://secret-with-scheme",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "query-password" not in text and "secret-with-scheme" not in text
    values = orjson.loads(out.stdout)
    assert values["SINK_EASEMOB_CLIENT_SECRET"] == "*** (1 secret)"
    assert values["SINK_AMQP_URL"].startswith("amqp://sink@rabbit:5672/?password=")


def test_config_json_is_one_object_of_variables() -> None:
    out = cli("config", "--json", SINK_SECRETS="abc")
    values = orjson.loads(out.stdout)
    assert values["SINK_SECRETS"] == "*** (1 secret)" and values["SINK_PORT"] == "8080"


def test_config_with_a_bad_value_exits_2_with_one_line_naming_it() -> None:
    out = cli("config", SINK_PREFETCH="many")
    assert out.returncode == 2
    assert out.stdout == b""
    assert len(out.stderr.decode().splitlines()) == 1
    assert "SINK_PREFETCH" in out.stderr.decode() and b"Traceback" not in out.stderr


def listed(text: str) -> list[str]:
    """The variables a --help epilog lists, in order."""
    return [line.split()[0] for line in text.splitlines() if line.startswith("  SINK_")]


@pytest.mark.parametrize("command", ["ingress", "worker", "run", "dlq list", "backfill"])
def test_a_commands_help_lists_exactly_the_variables_its_processes_read(command: str) -> None:
    text = cli(*command.split(), "--help").stdout.decode()
    assert listed(text) == [v.name for v in for_command(command)]


def test_the_ingress_help_names_what_the_ingress_reads_beyond_the_old_list() -> None:
    names = listed(cli("ingress", "--help").stdout.decode())
    for var in ("SINK_HANDLERS", "SINK_ORDERING", "SINK_PARTITIONS", "SINK_PRESEND_PATH",
                "SINK_PRESEND_BUDGET_MS", "SINK_PRESEND_DEFAULT", "SINK_DRAIN_DELAY",
                "SINK_DEDUP_URL", "SINK_DEDUP_TTL", "SINK_INGRESS_PROCESSES"):  # fmt: skip
        assert var in names, var


def test_the_worker_help_names_its_probe_server_and_the_ordering() -> None:
    names = listed(cli("worker", "--help").stdout.decode())
    for var in ("SINK_WORKER_HOST", "SINK_WORKER_PORT", "SINK_ORDERING", "SINK_PARTITIONS",
                "SINK_QUEUE_POLL_S", "SINK_DIRECTORY_URL", "SINK_EASEMOB_HOST"):  # fmt: skip
        assert var in names, var


def test_help_is_plain_text_with_true_defaults() -> None:
    ingress = " ".join(cli("ingress", "--help").stdout.decode().split())
    run = cli("run", "--help").stdout.decode()
    assert "SINK_INGRESS_PROCESSES Ingress processes" in ingress
    assert "(default: the usable CPUs)" in ingress
    assert "SINK_INGRESS_PROCESSES" not in run  # `run` is one ingress in one process
    for text in (ingress, run):
        assert ":mod:" not in text and "``" not in text and ":class:" not in text
    helps = {v.name: v.doc for v in for_command("ingress")}
    assert helps["SINK_HOST"] != helps["SINK_PORT"]


def test_config_with_an_out_of_range_port_exits_2_naming_its_bounds() -> None:
    out = cli("config", SINK_PORT="99999")
    assert out.returncode == 2 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [
        "callback-sink: configuration error: SINK_PORT=99999: must be between 1 and 65535"
    ]


def test_a_worker_with_an_out_of_range_setting_exits_2_before_connecting() -> None:
    out = cli("worker", SINK_PREFETCH="70000", SINK_AMQP_URL="amqp://guest:guest@127.0.0.1:9/")
    assert out.returncode == 2
    assert out.stderr.decode().splitlines() == [
        "callback-sink: configuration error: SINK_PREFETCH=70000: must be between 1 and 65535"
    ]


def test_config_says_a_secret_came_from_its_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("file-secret-one\nfile-secret-two\n")
    out = cli("config", SINK_SECRETS_FILE=str(secrets))
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "file-secret" not in text
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert lines["SINK_SECRETS"].endswith("*** (2 secrets)  [file]")
