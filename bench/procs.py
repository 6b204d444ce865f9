"""The benchmark's child processes, and what ``/proc`` says about them.

Each child runs in its own session (a Ctrl-C reaches only the benchmark, which then stops its
children in order) and gets SIGTERM from the kernel should the benchmark die without cleaning
up (``PR_SET_PDEATHSIG``). Its standard output and error go to files, not pipes: the benchmark
then spends no CPU reading a child's log lines while it measures, and reads them afterwards
(the counting handler's lines, see :func:`handled_lines`) or when the child failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# scenarios.py calls procs.free_port(): the one definition, re-exported.
from callback_sink.testing.ports import free_port as free_port

#: Prefix of the counting handler's lines (bench/counting_handler.py writes them).
HANDLED = "bench-handled"
#: How long a child may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: ``prctl`` option: the signal a child gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child process exited, or did not become ready, while the benchmark needed it."""


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    return 0


def peak_rss_mib(pid: int) -> float:
    """Highest resident set size of a live process so far (``VmHWM``), MiB; 0 if gone."""
    try:
        return _status_kib(pid, "VmHWM") / 1024
    except (OSError, ValueError):
        return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from ``/proc/PID/stat``; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (children of children too)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text(encoding="ascii").rpartition(")")[2].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (``/proc/stat``), core-seconds."""
    first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


#: Before each row the machine should be this idle (all cores, core-seconds per second) ...
QUIET_CORES = 0.2
#: ... over windows this long, waited for at most this long: a row must not pay for what the
#: previous one left running (RabbitMQ deleting a queue of 100,000 messages, say).
QUIET_WINDOW, QUIET_PATIENCE = 0.5, 20.0


async def quiet(what: str = "row") -> float:
    """Wait until the machine is idle (:data:`QUIET_CORES`), or :data:`QUIET_PATIENCE`
    passed, which is said on standard error (``what`` starts on a busy machine); answer the
    busy cores of the last window (what the step started on)."""
    deadline = time.monotonic() + QUIET_PATIENCE
    while True:
        before, started = machine_busy_seconds(), time.monotonic()
        await asyncio.sleep(QUIET_WINDOW)
        busy = (machine_busy_seconds() - before) / (time.monotonic() - started)
        if busy <= QUIET_CORES:
            return busy
        if time.monotonic() > deadline:
            print(
                f"bench: {what} starts on a busy machine: {busy:.2f} cores still busy "
                f"after {QUIET_PATIENCE:.0f} s (see busy_cores_at_start)",
                file=sys.stderr,
                flush=True,
            )
            return busy


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    stdout: Path
    stderr: Path
    peak_mib: dict[int, float]  # pid -> VmHWM, refreshed by :meth:`sample`

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def check_alive(self) -> None:
        if not self.alive:
            raise self.failure(f"exited with status {self.process.returncode}")

    def tail(self, lines: int = 25) -> str:
        out = []
        for path in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                out += [line for line in text if not line.startswith(HANDLED)][-lines:]
        return "\n".join(f"    {line}" for line in out[-lines:]) or "    (no output)"

    def failure(self, what: str) -> ChildFailed:
        return ChildFailed(f"{self.name} (pid {self.pid}) {what}; its last output:\n{self.tail()}")

    def sample(self) -> None:
        """Record the peak RSS of the child and its descendants (call before stopping)."""
        if self.alive:
            for pid in descendants(self.pid):
                mib = peak_rss_mib(pid)
                if mib:
                    self.peak_mib[pid] = max(self.peak_mib.get(pid, 0.0), mib)

    def cpu(self) -> float:
        """CPU seconds of the child and its live descendants."""
        return sum(cpu_seconds(pid) for pid in descendants(self.pid)) if self.alive else 0.0

    @property
    def max_peak_mib(self) -> float:
        return max(self.peak_mib.values(), default=0.0)

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """``sig`` (SIGTERM: a graceful stop), then SIGKILL after :data:`STOP_TIMEOUT`."""
        self.sample()
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self.process.wait()
        return self.process.returncode if self.process.returncode is not None else -1

    async def wait(self, within: float) -> int:
        """Wait for the child to exit by itself (a one-shot helper)."""
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            raise self.failure(f"did not finish within {within:.0f} s") from None


async def start(
    name: str, command: Sequence[str], env: Mapping[str, str], cwd: Path, logs: Path
) -> Child:
    """Start ``command`` with its output in ``logs/{name}-{n}.out|err``."""
    logs.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    n = 1
    while (logs / f"{name}-{n}.out").exists():
        n += 1
    stdout, stderr = logs / f"{name}-{n}.out", logs / f"{name}-{n}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *command,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return Child(name, process, stdout, stderr, {})


class Handled:
    """The counting handler's lines, read incrementally from the worker's standard error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.count = 0
        self.times: list[float] = []  # time.monotonic() of each handled callback, in order
        self.call_ids: list[str] = []  # callId of each
        self.keys: set[str] = set()  # distinct dedup keys

    def poll(self) -> int:
        data = b""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
            self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            if not raw.startswith(HANDLED.encode()):
                continue
            parts = raw.decode("utf-8", "replace").split(" ", 4)
            if len(parts) < 5:
                continue
            self.count += 1
            self.times.append(float(parts[2]))
            self.call_ids.append(parts[3])
            self.keys.add(parts[4])
        return self.count

    @property
    def twice(self) -> int:
        return self.count - len(self.keys)

    async def wait_for(self, target: int, child: Child, within: float, idle: float = 0) -> None:
        """Until ``target`` lines were seen; raises if the child dies or ``within`` passes.
        With ``idle``, also return once nothing new came for that long (a loss shows as a
        shortfall in the figures instead of a failed run)."""
        deadline = time.monotonic() + within
        last_change, last_count = time.monotonic(), -1
        while self.poll() < target:
            child.check_alive()
            now = time.monotonic()
            if self.count != last_count:
                last_change, last_count = now, self.count
            if idle and now - last_change > idle:
                return
            if now > deadline:
                raise child.failure(f"handled {self.count} of {target} within {within:.0f} s")
            await asyncio.sleep(0.05)


SERVICES = ("beam.smp", "redis-server")


def _total_cpu(pid: int) -> float:
    """utime + stime + cutime + cstime: a process's CPU plus that of its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _services_cpu() -> float:
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError):
            if comm.read_text(encoding="utf-8").strip() in SERVICES:
                total += cpu_seconds(int(comm.parent.name))
    return total


@dataclass
class CpuWindow:
    """CPU used during a scenario: by the benchmark and everything it started, by RabbitMQ and
    Redis, and by the rest of the machine ("other": another test run skews the figures)."""

    at: float
    machine: float
    ours: dict[int, float]
    self_and_reaped: float
    services: float

    @classmethod
    def begin(cls) -> CpuWindow:
        me = os.getpid()
        usage = _self_and_reaped()
        return cls(
            time.monotonic(),
            machine_busy_seconds(),
            {pid: _total_cpu(pid) for pid in descendants(me) if pid != me},
            usage,
            _services_cpu(),
        )

    def end(self) -> dict[str, float]:
        """Shares of one core since :meth:`begin`, in %: ``bench`` (this process and its
        children), ``services`` (RabbitMQ, Redis), ``other``."""
        me = os.getpid()
        wall = max(time.monotonic() - self.at, 1e-9)
        now = {pid: _total_cpu(pid) for pid in descendants(me) if pid != me}
        ours = _self_and_reaped() - self.self_and_reaped
        ours += sum(cpu - self.ours.get(pid, 0.0) for pid, cpu in now.items())
        ours -= sum(cpu for pid, cpu in self.ours.items() if pid not in now)
        services = _services_cpu() - self.services
        other = machine_busy_seconds() - self.machine - ours - services
        return {
            "bench": 100 * max(ours, 0.0) / wall,
            "services": 100 * max(services, 0.0) / wall,
            "other": 100 * max(other, 0.0) / wall,
        }


def _self_and_reaped() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
