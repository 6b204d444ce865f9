"""The ingress supervisor keeps its children running, gives up on a crash loop, and stops them
all on SIGTERM; an ingress that cannot use its spool or port says so in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callback_sink.ingress import supervisor as supervisor_module
from callback_sink.ingress.siblings import claim_root
from callback_sink.ingress.supervisor import Supervisor
from callback_sink.testing.ports import free_port
from tests.needs import missing
from tests.processes import ROOT
from tests.waiting import until

CLI = [sys.executable, "-m", "callback_sink"]


def sleeper(tmp_path: Path) -> list[str]:
    """A child that writes its pid to ``tmp_path/<pid>`` and sleeps until killed."""
    code = f"import os, time; open({str(tmp_path)!r} + f'/{{os.getpid()}}', 'w'); time.sleep(600)"
    return [sys.executable, "-c", code]


async def started_pids(directory: Path, count: int, within: float = 30.0) -> list[int]:
    def pids() -> list[int]:
        return [int(p.name) for p in directory.iterdir()]

    await until(lambda: len(pids()) >= count, within, what=f"{count} children to start")
    return sorted(pids())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_killed_child_is_restarted_and_a_stop_ends_every_child_with_exit_0(
    tmp_path: Path,
) -> None:
    supervisor = Supervisor(lambda index: sleeper(tmp_path), 2, stop_timeout=10)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    first = await started_pids(tmp_path, 2)
    os.kill(first[0], signal.SIGKILL)
    pids = await started_pids(tmp_path, 3)
    assert len(supervisor.pids) == 2
    stop.set()
    assert await asyncio.wait_for(running, 30) == 0
    assert not any(alive(pid) for pid in pids)


async def test_children_that_keep_dying_are_restarted_with_backoff_and_flag_a_crash_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Giving up would turn whatever kills a child (an attack, a rare bug) into an outage.
    monkeypatch.setattr(supervisor_module, "RESTART_MAX", 0.2)
    monkeypatch.setattr(supervisor_module, "CRASH_LOOP_CHECK", 0.05)
    command = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(lambda index: command, 1, max_deaths=3, window=2, state_dir=tmp_path)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    await until(lambda: supervisor_module.crash_loop(tmp_path), 60, what="the crash-loop state")
    assert supervisor.crash_looping and not running.done()
    assert supervisor_module.crash_loop(tmp_path)["deaths"] == 4  # type: ignore[index]
    await until(lambda: len(supervisor._deaths) >= 8, 60, what="restarts after the 4th death")
    stop.set()
    assert await asyncio.wait_for(running, 30) == 0
    assert supervisor_module.crash_loop(tmp_path) is None


async def test_a_crash_loop_ends_once_the_window_is_quiet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(supervisor_module, "CRASH_LOOP_CHECK", 0.05)
    # Dies twice (two marker files), then sleeps: a loop of max_deaths=1 that ends by itself.
    code = (
        f"import os, sys, time; n = len(os.listdir({str(tmp_path)!r})); "
        f"open({str(tmp_path)!r} + f'/died{{n}}', 'w'); "
        "sys.exit(3) if n < 3 else time.sleep(600)"
    )
    command = [sys.executable, "-c", code]
    state = tmp_path / "state"
    state.mkdir()
    supervisor = Supervisor(lambda index: command, 1, max_deaths=1, window=1.5, state_dir=state)
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop))
    await until(lambda: supervisor.crash_looping, 30, what="the crash loop")
    await until(lambda: not supervisor.crash_looping, 30, what="the crash loop to end")
    assert supervisor_module.crash_loop(state) is None
    stop.set()
    assert await asyncio.wait_for(running, 30) == 0


def ingress(root: Path, processes: int) -> subprocess.CompletedProcess[str]:
    """Start ``callback-sink ingress`` on ``root`` and wait for it to exit."""
    env = {"SINK_SPOOL_DIR": str(root), "SINK_PORT": str(free_port()), "SINK_SECRETS": "x" * 20}
    return subprocess.run(
        [*CLI, "ingress", "--processes", str(processes)], capture_output=True, text=True,
        cwd=ROOT, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip


def test_a_spool_root_claimed_by_another_ingress_stops_start_up_at_once_with_one_line(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    owner = claim_root(root)  # the other ingress
    try:
        started = time.monotonic()
        done = ingress(root, 2)
    finally:
        os.close(owner)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"callback-sink: spool directory {root} is in use by another ingress, or by one still "
        "draining (wait for it to exit; two running ingresses need different SINK_SPOOL_DIR)"
    ]
    assert time.monotonic() - started < 20  # no lock wait: refused as soon as it is seen


def test_a_read_only_spool_directory_stops_start_up_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    root.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only bind mount
        mounted = subprocess.run(["mount", "--bind", str(root), str(root)]).returncode == 0
        if not mounted:
            missing("cannot bind-mount here (root without CAP_SYS_ADMIN?)")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], check=True)
    else:
        root.chmod(0o500)
    try:
        done = ingress(root, 1)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(root)], check=False)
        root.chmod(0o700)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"callback-sink: cannot use spool directory {root}: E")
    assert "Traceback" not in done.stdout + done.stderr
