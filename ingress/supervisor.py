"""The parent of a multi-process ingress: starts N children, restarts those that die, stops them.

Each child is a fresh interpreter (``command(index)``, e.g. ``python -m callback_sink ingress
--child 3``) in a session of its own, so it configures its own logging and nothing is shared
but the listening port (SO_REUSEPORT, bound by each child) and the spool root. The parent
binds nothing and handles no callback: it only watches.

- A child that exits while the parent is not stopping is restarted after a short pause that
  grows with the recent deaths; more than ``max_deaths`` deaths within ``window`` seconds means
  something is wrong that restarting will not fix: the parent stops every child and exits
  non-zero, for the orchestrator to see.
- On stop (the parent's SIGTERM or SIGINT) every child gets SIGTERM and the time of a graceful
  shutdown; one still running after ``stop_timeout`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping, Sequence

from callback_sink.sink import logs

log = logs.get("supervisor")

#: More child deaths than this within :data:`DEATH_WINDOW` seconds make the parent give up.
MAX_DEATHS = 5
DEATH_WINDOW = 60.0
#: Pause before restarting a dead child, seconds; doubled per recent death, up to the maximum.
RESTART_MIN = 0.1
RESTART_MAX = 5.0


class Supervisor:
    """Keeps ``processes`` children of ``command`` running until stopped."""

    def __init__(
        self,
        command: Callable[[int], Sequence[str]],
        processes: int,
        *,
        env: Mapping[str, str] | None = None,
        stop_timeout: float = 60.0,
        max_deaths: int = MAX_DEATHS,
        window: float = DEATH_WINDOW,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._command = command
        self._processes = processes
        self._env = dict(env) if env is not None else None
        self._stop_timeout = stop_timeout
        self._max_deaths = max_deaths
        self._window = window
        #: Told the pid of every child that exited (its metrics are forgotten).
        self._on_exit = on_exit
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._deaths: list[float] = []
        self._stopping = asyncio.Event()
        self._gave_up = False
        self._killed = False

    @property
    def pids(self) -> dict[int, int]:
        """The running children's process ids, by index."""
        return {i: p.pid for i, p in self._children.items() if p.returncode is None}

    async def run(self, stop: asyncio.Event) -> int:
        """Supervise until ``stop`` is set (0) or the children keep dying (1)."""
        log.info("supervisor.started", processes=self._processes)
        slots = [asyncio.create_task(self._keep(i)) for i in range(self._processes)]
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait([waiting, *slots], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        self._stopping.set()
        await self._stop_children()
        await asyncio.gather(*slots, return_exceptions=True)
        code = 1 if self._gave_up or self._killed else 0
        log.info("supervisor.stopped", exit_code=code)
        return code

    async def _keep(self, index: int) -> None:
        """Run child ``index`` again and again; return when stopping or giving up."""
        while not self._stopping.is_set():
            child = await asyncio.create_subprocess_exec(
                *self._command(index), env=self._env, start_new_session=True
            )
            self._children[index] = child
            log.info("supervisor.child_started", process=index, pid=child.pid)
            if self._stopping.is_set():  # started while the others were being stopped
                child.send_signal(signal.SIGTERM)
            code = await child.wait()
            if self._on_exit is not None:
                self._on_exit(child.pid)
            if self._stopping.is_set():
                return
            recent = self._died(index, child.pid, code)
            if recent > self._max_deaths:
                log.error(
                    "supervisor.giving_up",
                    deaths=recent,
                    window_s=self._window,
                    reason="ingress children keep dying",
                )
                self._gave_up = True
                return
            pause = min(RESTART_MIN * 2 ** (recent - 1), RESTART_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    def _died(self, index: int, pid: int, code: int) -> int:
        """Count a death; return the deaths within the window."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < self._window] + [now]
        log.error(
            "supervisor.child_died",
            process=index,
            pid=pid,
            exit_code=code,
            recent_deaths=len(self._deaths),
        )
        return len(self._deaths)

    async def _stop_children(self) -> None:
        running = [c for c in self._children.values() if c.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        if not running:
            return
        _, late = await asyncio.wait(
            [asyncio.create_task(c.wait()) for c in running], timeout=self._stop_timeout
        )
        if late:
            self._killed = True
            for child in running:
                if child.returncode is None:
                    log.error("supervisor.child_killed", pid=child.pid, after_s=self._stop_timeout)
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
            await asyncio.gather(*late, return_exceptions=True)
