"""Bounded logging under a flood: refusals sampled per reason, server errors without bodies.

A flood of bad requests (a misconfigured secret, a scanner, a file-descriptor shortage) must
not turn into a flood of log lines: each kind of refusal writes at most ``rate`` lines a
second, and what it held back is reported once per second in one summary line.

Two sources of log lines are not ours: aiohttp's parser errors (logged with a traceback that
quotes the raw request, body and ``security`` included) and asyncio's accept loop (which, out
of file descriptors, logs one traceback per attempt and per listening socket, hundreds a
second). :func:`quiet_server_logs` routes both through a :class:`Sampler` as one-line events
that name the error type, never the data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from callback_sink.sink import logs

log = logs.get("ingress")

#: One sampling window, seconds: the unit of "at most N lines a second".
WINDOW = 1.0
#: Accept failures and parser errors: at most this many lines per window each.
SERVER_ERROR_RATE = 1


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class Sampler:
    """At most ``rate`` admitted events per key and window; the rest are counted and handed
    out by :meth:`drain` once their window has ended."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._ended: dict[Hashable, int] = {}

    def admit(self, key: Hashable) -> bool:
        """True: write this line. False: it was counted as suppressed."""
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= WINDOW:
            if window is not None and window.suppressed:
                self._ended[key] = self._ended.get(key, 0) + window.suppressed
            window = self._windows[key] = _Window(now)
        if window.logged < self._rate:
            window.logged += 1
            return True
        window.suppressed += 1
        return False

    def drain(self) -> dict[Hashable, int]:
        """Suppressed counts of every key whose window has ended; forgets those windows."""
        now = self._clock()
        ended, self._ended = self._ended, {}
        for key, window in list(self._windows.items()):
            if now - window.start >= WINDOW:
                del self._windows[key]
                if window.suppressed:
                    ended[key] = ended.get(key, 0) + window.suppressed
        return ended


class _ServerLogFilter(logging.Filter):
    """Replaces aiohttp's request-error records (which may quote the request) by one
    sampled line naming the error type."""

    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self._sampler = sampler

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        error_type = type(exc).__name__
        if self._sampler.admit(("http.request_error", error_type)):
            log.warning(
                "http.request_error",
                error_type=error_type,
                status=getattr(exc, "code", None),
                where=record.getMessage().split(" from ", 1)[0][:80],
            )
        return False


def _accept_error_handler(
    sampler: Sampler, previous: Any
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" in message and isinstance(context.get("exception"), OSError):
            if sampler.admit(("accept", message)):
                exc = context["exception"]
                log.error("ingress.accept_failed", error=f"{type(exc).__name__}: {exc}")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


@contextmanager
def quiet_server_logs(rate: int = SERVER_ERROR_RATE) -> Iterator[Sampler]:
    """Route aiohttp's request errors and the event loop's accept failures through one
    sampler (yielded, for the caller to report what it held back), while the block runs."""
    sampler = Sampler(rate)
    server_log = logging.getLogger("aiohttp.server")
    server_filter = _ServerLogFilter(sampler)
    server_log.addFilter(server_filter)
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(_accept_error_handler(sampler, previous))
    try:
        yield sampler
    finally:
        loop.set_exception_handler(previous)
        server_log.removeFilter(server_filter)
