"""deploy/systemd: the units run real commands with settings that load, and give each process
the worst-case stop time that callback_sink/shutdown.py sums for those settings."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from callback_sink.environment import every_variable
from callback_sink.handlers.registry import load
from callback_sink.service import CHILD_STOP_MARGIN
from callback_sink.shutdown import chain_seconds, ingress_stop_seconds, worker_stop_seconds
from callback_sink.sink.settings import Settings

SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
#: As in tests/test_k8s.py: beyond the supervisor's kill time-out, the parent's own exit;
#: beyond a worker's worst-case stop, its @on_shutdown hooks, which nothing bounds.
PARENT_EXIT = 5
HOOKS_MARGIN = 10


def unit(name: str) -> dict[str, list[str]]:
    """A unit file's ``Key=value`` lines, each key with its values in order."""
    keys: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def environment_file() -> dict[str, str]:
    env = {}
    for line in (SYSTEMD / "callback-sink.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def settings_of(service: str, tmp_path: Path) -> Settings:
    """What a process of ``service`` reads: the environment file, the unit's own
    ``Environment=`` (the template's instance 8081), a real file for the secrets."""
    secrets = tmp_path / "secrets"
    secrets.write_text("# the rule's secret\nplaceholder-secret-of-32-characters\n")
    env = environment_file() | {"SINK_SECRETS_FILE": str(secrets)}
    for assignment in unit(service).get("Environment", []):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%i", "8081")
    return Settings.from_env(env)


@pytest.mark.parametrize(
    ("service", "command"),
    [("callback-sink-ingress.service", "ingress"), ("callback-sink-worker@.service", "worker")],
)
def test_each_unit_runs_its_command_with_the_environment_file(service: str, command: str) -> None:
    keys = unit(service)
    [exec_start] = keys["ExecStart"]
    assert shlex.split(exec_start)[1:] == [command]
    assert keys["EnvironmentFile"] == ["/etc/callback-sink/callback-sink.env"]
    assert keys["User"] == ["callback-sink"]


def test_the_environment_file_names_only_declared_variables() -> None:
    declared = {v.name for v in every_variable()}
    assert [name for name in environment_file() if name not in declared] == []


def test_a_worker_instance_serves_its_probes_on_the_port_it_is_named_after(
    tmp_path: Path,
) -> None:
    assert "SINK_WORKER_PORT=%i" in unit("callback-sink-worker@.service")["Environment"]
    assert settings_of("callback-sink-worker@.service", tmp_path).worker_port == 8081


def test_stop_time_outs_cover_each_process_worst_case_stop(tmp_path: Path) -> None:
    ingress = settings_of("callback-sink-ingress.service", tmp_path)
    worker = settings_of("callback-sink-worker@.service", tmp_path)

    def timeout(service: str) -> float:
        [seconds] = unit(service)["TimeoutStopSec"]
        return float(seconds)

    needed = ingress_stop_seconds(ingress) + CHILD_STOP_MARGIN + PARENT_EXIT
    assert timeout("callback-sink-ingress.service") >= needed
    assert timeout("callback-sink-worker@.service") >= worker_stop_seconds(worker) + HOOKS_MARGIN
    handlers = load(worker.handlers, use_entry_points=False).handlers
    assert chain_seconds(worker, handlers) <= worker.shutdown_timeout


def test_the_spool_is_in_the_ingress_units_state_directory(tmp_path: Path) -> None:
    [state] = unit("callback-sink-ingress.service")["StateDirectory"]
    spool = Path(settings_of("callback-sink-ingress.service", tmp_path).spool_dir)
    assert spool.is_relative_to(Path("/var/lib") / state)
