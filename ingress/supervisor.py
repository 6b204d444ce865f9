"""The parent of a multi-process ingress: starts N children, restarts those that die, stops them.

Each child is a fresh interpreter (``command(index)``, e.g. ``python -m callback_sink ingress
--child 3``) in a session of its own, so it configures its own logging and nothing is shared
but the listening port (SO_REUSEPORT, bound by each child) and the spool root. The parent
binds nothing and handles no callback: it only watches.

- A child that exits while the parent is not stopping is restarted after a pause that
  doubles with each recent death, up to :data:`RESTART_MAX`; it is always restarted. Giving
  up would turn an attack that kills one child (or a bug hit now and then) into an outage of
  the whole ingress. More than ``max_deaths`` deaths within ``window`` seconds is a *crash
  loop*: one ``supervisor.crash_loop`` error line, and a state file (:data:`CRASH_LOOP_FILE`
  in the spool root) that makes every child's ``/readyz`` answer 503, so the orchestrator
  sees it and a load balancer sends elsewhere; it ends (``supervisor.crash_loop_ended``)
  once the window holds no more than ``max_deaths`` deaths.
- On stop (the parent's SIGTERM or SIGINT) every child gets SIGTERM and the time of a graceful
  shutdown; one still running after ``stop_timeout`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from callback_sink.sink import logs

log = logs.get("supervisor")

#: More child deaths than this within :data:`DEATH_WINDOW` seconds are a crash loop.
MAX_DEATHS = 5
DEATH_WINDOW = 60.0
#: Pause before restarting a dead child, seconds; doubled per recent death, up to the maximum
#: (short enough that a child comes back soon after whatever killed it stops).
RESTART_MIN = 0.1
RESTART_MAX = 30.0
#: In the spool root while the children crash-loop: its children's /readyz read it.
CRASH_LOOP_FILE = "CRASH_LOOP"
#: How often a crash loop is checked for having ended, seconds.
CRASH_LOOP_CHECK = 1.0


def crash_loop(root: str | Path) -> dict[str, Any] | None:
    """The supervisor's crash-loop state for spool root ``root`` (deaths, window), or None."""
    try:
        state: dict[str, Any] = json.loads((Path(root) / CRASH_LOOP_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    return state


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
        state_dir: str | Path | None = None,
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
        self._killed = False
        #: Where :data:`CRASH_LOOP_FILE` goes (the spool root); None: nowhere.
        self._state = Path(state_dir) / CRASH_LOOP_FILE if state_dir is not None else None
        self.crash_looping = False

    @property
    def pids(self) -> dict[int, int]:
        """The running children's process ids, by index."""
        return {i: p.pid for i, p in self._children.items() if p.returncode is None}

    async def run(self, stop: asyncio.Event) -> int:
        """Supervise until ``stop`` is set: 0, or 1 when a child had to be killed."""
        log.info("supervisor.started", processes=self._processes)
        self._clear_state()  # left by a parent that was killed
        slots = [asyncio.create_task(self._keep(i)) for i in range(self._processes)]
        watch = asyncio.create_task(self._watch_crash_loop())
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait([waiting, *slots], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        watch.cancel()
        self._stopping.set()
        await self._stop_children()
        await asyncio.gather(*slots, watch, return_exceptions=True)
        self._clear_state()
        code = 1 if self._killed else 0
        log.info("supervisor.stopped", exit_code=code)
        return code

    async def _keep(self, index: int) -> None:
        """Run child ``index`` again and again; return when stopping."""
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
            if recent > self._max_deaths and not self.crash_looping:
                self._enter_crash_loop(recent)
            pause = min(RESTART_MIN * 2 ** (recent - 1), RESTART_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    def _enter_crash_loop(self, deaths: int) -> None:
        self.crash_looping = True
        log.error("supervisor.crash_loop", deaths=deaths, window_s=self._window,
                  restart_max_s=RESTART_MAX, reason="ingress children keep dying")  # fmt: skip
        if self._state is not None:
            state = {"deaths": deaths, "window_s": self._window, "since": time.time()}
            with contextlib.suppress(OSError):
                tmp = self._state.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, self._state)

    async def _watch_crash_loop(self) -> None:
        """End the crash loop once the window holds no more than ``max_deaths`` deaths."""
        while True:
            await asyncio.sleep(CRASH_LOOP_CHECK)
            now = time.monotonic()
            recent = sum(now - t < self._window for t in self._deaths)
            if self.crash_looping and recent <= self._max_deaths:
                self.crash_looping = False
                self._clear_state()
                log.info("supervisor.crash_loop_ended", deaths=recent, window_s=self._window)

    def _clear_state(self) -> None:
        if self._state is not None:
            with contextlib.suppress(FileNotFoundError):
                self._state.unlink()

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
