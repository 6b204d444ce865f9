"""Real ``callback-sink`` processes for tests: started, watched through their logs, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "callback_sink"]
#: Defaults for test processes (a test may override them): a stop without the load-balancer
#: drain delay, and no worker HTTP server (several workers share the host).
QUIET = {"SINK_DRAIN_DELAY": "0", "SINK_WORKER_PORT": "0"}


class SinkProcess:
    """One ``callback-sink <command>`` subprocess whose JSON log lines are collected."""

    def __init__(self, command: str, env: Mapping[str, str], cwd: Path = ROOT) -> None:
        self.command = command
        self.cwd = cwd
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SINK_LOG_FORMAT": "json",
            **QUIET,
            **env,
        }
        self.lines: list[dict[str, object]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self, ready_event: str | None, within: float = 30.0) -> SinkProcess:
        """Start the process and wait for its ``ready_event`` line; ``None`` waits for none
        (a worker at ``SINK_LOG_LEVEL=warning`` writes no start-up line: the broker holds
        what is published meanwhile)."""
        self.process = await asyncio.create_subprocess_exec(
            *CLI, self.command, env=self.env, cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        if ready_event is not None:
            await self.wait_for_line(ready_event, within=within)
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = {"event": "stdout", "text": raw.decode(errors="replace").rstrip()}
            if isinstance(line, dict):
                self.lines.append(line)
                self._changed.set()

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for_line(self, name: str, count: int = 1, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while len(self.events(name)) < count:
                if self.process is not None and self.process.returncode is not None:
                    tail = self.lines[-5:]
                    raise RuntimeError(f"{self.command} exited {self.process.returncode}: {tail}")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.5)

    async def stop(self, sig: int = signal.SIGTERM, within: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL stops it at once)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(within):
            code = await self.process.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
