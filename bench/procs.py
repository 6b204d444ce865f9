"""The benchmark's child processes: an ingress or a worker run from the project's own CLI.

Each child runs in its own session (a Ctrl-C reaches only the benchmark, which then stops
its children in order) and gets SIGTERM from the kernel should the benchmark die without
cleaning up (``PR_SET_PDEATHSIG``). Its output is read all along, so that a full pipe never
blocks it, and the last lines are kept for the error message if it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Prefix of the counting handler's progress lines (bench/counting_handler.py writes them).
HANDLED = "bench-handled"
#: Output lines kept per child for error messages.
TAIL_LINES = 30
#: How long a child may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: ``prctl`` option: the signal a child gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child process exited, or did not become ready, while the benchmark needed it."""


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # resident now (VmRSS)
    peak_mib: float  # highest resident size so far (VmHWM)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def memory_of(pid: int) -> Memory:
    """Resident set size of a live process, from ``/proc/PID/status``."""
    kib: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            kib[key] = int(value.split()[0])
    return Memory(kib["VmRSS"] / 1024, kib["VmHWM"] / 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(command_name: str) -> float:
    """CPU time of every process of this name (``/proc/PID/comm``): the broker, Redis."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile, or not ours to read
            if comm.read_text(encoding="utf-8").strip() == command_name:
                total += cpu_seconds(int(comm.parent.name))
    return total


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (``/proc/stat``), core-seconds."""
    first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.monotonic()
    seconds: dict[str, float]  # CPU time used so far, by role
    machine: float  # non-idle core-seconds of the whole machine


#: Processes outside the benchmark whose CPU time is reported, by role: ``/proc/PID/comm``.
SERVICES = {"RabbitMQ": "beam.smp", "Redis": "redis-server"}


def sample_cpu(children: Sequence[Child]) -> CpuSample:
    """CPU time of the children, this process (the load generator) and the services."""
    seconds = {child.name: child.cpu() for child in children}
    seconds["client"] = time.process_time()
    for role, comm in SERVICES.items():
        seconds[role] = cpu_seconds_of(comm)
    return CpuSample(time.monotonic(), seconds, machine_busy_seconds())


def cpu_percent(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Each role's share of one core between two samples, plus ``other``: what the rest of
    the machine used meanwhile (another test run on the same cores skews the figures)."""
    wall = max(after.at - before.at, 1e-9)
    # max(0, ...): clock ticks are 10 ms, so a near-idle process can come out a tick negative.
    used = {role: max(after.seconds[role] - before.seconds[role], 0.0) for role in after.seconds}
    used["other"] = max(after.machine - before.machine - sum(used.values()), 0.0)
    return {role: 100 * seconds / wall for role, seconds in used.items()}


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory(self) -> Memory:
        self.check_alive()
        return memory_of(self.pid)

    def cpu(self) -> float:
        self.check_alive()
        return cpu_seconds(self.pid)

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise self.failure(f"exited with status {self.process.returncode}")

    def failure(self, what: str) -> ChildFailed:
        output = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return ChildFailed(f"{self.name} (pid {self.pid}) {what}; its last output:\n{output}")

    async def stop(self) -> int:
        """SIGTERM (a graceful stop), then SIGKILL after :data:`STOP_TIMEOUT`; the exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for reader in self.readers:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(reader, 1.0)
        return self.process.returncode if self.process.returncode is not None else -1


async def start(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    on_line: Callable[[str], bool] | None = None,
) -> Child:
    """Start ``command``; ``on_line`` sees every output line first and returns True to
    consume it (progress lines), otherwise the line goes to the child's tail."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    child = Child(name, process)
    for stream in (process.stdout, process.stderr):
        assert stream is not None
        child.readers.append(asyncio.create_task(_read(stream, child, on_line)))
    return child


async def _read(
    stream: asyncio.StreamReader, child: Child, on_line: Callable[[str], bool] | None
) -> None:
    async for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if on_line is None or not on_line(line):
            child.tail.append(line)


class Progress:
    """How many callbacks the counting handler has seen, fed from the worker's output."""

    def __init__(self) -> None:
        self.handled = 0
        self.first_at = 0.0  # time.monotonic() of the first counted callback, in the worker
        self.last_at = 0.0  # ... and of the last one
        self.keys: set[str] = set()  # dedup keys seen: fewer than ``handled`` means duplicates
        self._target = 0
        self._reached = asyncio.Event()

    def feed(self, line: str) -> bool:
        if not line.startswith(HANDLED):
            return False
        _, count, at, key = line.split(maxsplit=3)
        self.handled, self.last_at = int(count), float(at)
        self.keys.add(key)
        if self.handled == 1:
            self.first_at = self.last_at
        if self._target and self.handled >= self._target:
            self._reached.set()
        return True

    async def wait_for(self, target: int, worker: Child) -> float:
        """Wait until ``target`` callbacks were handled (the caller bounds the wait);
        return the worker's monotonic time of the last one."""
        self._target = target
        self._reached.clear()
        if self.handled >= target:
            return self.last_at
        reached = asyncio.create_task(self._reached.wait())
        exited = asyncio.create_task(worker.process.wait())
        try:
            await asyncio.wait({reached, exited}, return_when="FIRST_COMPLETED")
        finally:
            reached.cancel()
            exited.cancel()
        if worker.process.returncode is not None:
            await asyncio.wait(worker.readers, timeout=1.0)  # its last words, for the error
        worker.check_alive()
        return self.last_at
