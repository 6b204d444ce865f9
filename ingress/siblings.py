"""Per-process spools under one root, and the hand-over of a spool no live process holds.

``callback-sink ingress --processes N`` runs N children; child ``k`` owns ``<root>/k`` (its
``LOCK`` is flocked by the child's :class:`~ingress.spool.Spool` for as long as it lives). The
root itself is claimed by one ingress (the supervisor, or an in-process ingress) through
``<root>/OWNER``, so a second ingress on the same root stops at once with one clear line.

A directory whose lock nobody holds is an orphan: its child died (and has not opened it again
yet), or the previous run had more processes, or it is the root itself holding segments left
by a version that spooled straight into ``SINK_SPOOL_DIR``. Every child's :class:`Adopter`
looks for orphans with segments while the broker is reachable, takes one's lock (never
waiting), drains it for at most ``hold`` seconds and releases the lock again. The lock is what
makes the hand-over safe: at any moment at most one process reads and commits a directory, so
a record is never published by two drainers, and what one of them committed the next one reads
from disk. A restarted child simply waits for its own directory's lock (polling, for up to
:data:`ingress.spool.LOCK_WAIT`), which an adopter gives back after one short pass; the adopter
then finds it locked and leaves it alone.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from callback_sink.ingress import spool_files as files
from callback_sink.ingress.drainer import BATCH, Background, republish
from callback_sink.ingress.publisher import Publisher
from callback_sink.ingress.spool import Spool, SpoolLocked
from callback_sink.sink import logs
from callback_sink.sink.errors import SpoolError

log = logs.get("spool")

#: How often a child looks for orphaned sibling spools, seconds.
ADOPT_INTERVAL = 2.0
#: How long an adopter keeps a sibling's lock per pass, so that a restarting sibling gets its
#: own directory back quickly (it polls the lock every 50 ms).
HOLD = 1.0
#: The pause between two passes over a sibling that still holds records.
BETWEEN_PASSES = 0.2
#: Longest pause after a failed adoption (the broker refusing, a broken disk), seconds.
BACKOFF_MAX = 30.0


def child_dir(root: str | Path, index: int) -> Path:
    """The spool directory of ingress child ``index``."""
    return Path(root) / str(index)


def orphan_candidates(root: Path, own: int) -> list[Path]:
    """Every spool directory under ``root`` but ``own``'s (siblings, and the root itself for
    data from before per-process spools) that holds segments, lowest index first."""
    try:
        children = [p for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError:
        return []
    siblings = sorted((p for p in children if int(p.name) != own), key=lambda p: int(p.name))
    return [p for p in (root, *siblings) if files.has_segments(p)]


def stranded(root: str | Path) -> tuple[int, int]:
    """Records and bytes left in every spool under ``root`` (the root's own included), once
    every process of the ingress stopped: callbacks answered 200 that no broker holds yet."""
    path = Path(root)
    try:
        children = [p for p in path.iterdir() if p.name.isdigit() and p.is_dir()]
    except OSError:
        return 0, 0
    totals = [files.pending(directory) for directory in (path, *children)]
    return sum(r for r, _ in totals), sum(b for _, b in totals)


def claim_root(root: str | Path) -> int:
    """Lock the spool root for this ingress; the descriptor holds the lock until closed.
    Raises :class:`SpoolError` with one line when the root is unusable or already claimed."""
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        files.probe_write(path)
        fd = os.open(path / "OWNER", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(f"cannot use spool directory {path}: {files.describe(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(
            f"spool directory {path} is in use by another ingress, or by one still draining "
            "(wait for it to exit; two running ingresses need different SINK_SPOOL_DIR)"
        ) from None
    return fd


class Adopter(Background):
    """Drains orphaned sibling spools in the background, one short locked pass at a time."""

    name = "spool-adopter"

    def __init__(
        self,
        root: str | Path,
        own: int,
        publisher: Publisher,
        max_bytes: int,
        *,
        batch: int = BATCH,
        interval: float = ADOPT_INTERVAL,
        hold: float = HOLD,
    ) -> None:
        super().__init__()
        self._root, self._own = Path(root), own
        self._publisher, self._max_bytes = publisher, max_bytes
        self._batch, self._interval, self._hold = batch, interval, hold

    async def _run(self) -> None:
        delay = self._interval
        while not self._stopping.is_set():
            more, failed = False, False
            if self._publisher.ready:
                for directory in await asyncio.to_thread(orphan_candidates, self._root, self._own):
                    if self._stopping.is_set():
                        return
                    left, error = await self._adopt(directory)
                    more, failed = more or left, failed or error
            delay = min(delay * 2, BACKOFF_MAX) if failed else self._interval
            await self._until(asyncio.sleep(BETWEEN_PASSES if more and not failed else delay))

    async def _adopt(self, directory: Path) -> tuple[bool, bool]:
        """One pass over an orphan: (records left in it, the pass failed)."""
        spool = Spool(directory, self._max_bytes, lock_wait=0)
        try:
            await spool.open()
        except SpoolLocked:
            return False, False  # alive, or being drained by another sibling
        except SpoolError as exc:
            log.warning("spool.adopt_failed", directory=str(directory), error=str(exc))
            return False, True
        deadline = time.monotonic() + self._hold
        error: str | None = None
        try:
            sent, error = await republish(
                spool,
                self._publisher,
                self._batch,
                lambda: self._stopping.is_set() or time.monotonic() >= deadline,
            )
            log.info(
                "spool.adopted",
                directory=str(directory),
                records=sent,
                remaining=spool.records,
                error=error,
            )
        except Exception as exc:  # a disk error, or a bug: retry later, never die
            error = f"{type(exc).__name__}: {exc}"
            log.error("spool.adopt_failed", directory=str(directory), error=error)
        finally:
            await spool.close()
        return spool.records > 0, error is not None
