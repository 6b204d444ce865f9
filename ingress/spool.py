"""The outage spool: callbacks kept on local disk while RabbitMQ cannot confirm them.

When the broker is unreachable, or a publisher confirm fails or is late, the ingress appends the
callback here and answers 200 only once the record is fsynced. :mod:`ingress.drainer`
republishes the records oldest first once the broker is back and commits them after their
confirms. One process owns a spool directory at a time (``flock`` on ``LOCK``).

The record format is :mod:`ingress.spool_format`, the files and their recovery
:mod:`ingress.spool_files`. A process appends only to a segment it created; it starts a new one
past ``segment_bytes`` and after every restart. A crash between a confirm and its committed
offset re-publishes at most one batch: at least once, and the workers deduplicate.

On open every segment is scanned from its committed offset: a bad stretch in the middle is
copied to ``corrupt/`` and skipped, one at the end (a torn write, never acknowledged) truncated.

Writers are serialized by an :class:`asyncio.Lock` and share fsyncs (group commit): each writer
queues its record, and the one holding the lock writes and fsyncs all queued records in one
worker-thread call. The byte bound counts segment bytes on disk (confirmed records too, until
their segment is deleted) plus the records being written. :meth:`Spool.health` tells whether an
append can be expected to succeed: the last write's outcome and the file system's free space.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from callback_sink.ingress import spool_files as files
from callback_sink.ingress.spool_format import Batch, Record, encode
from callback_sink.sink import logs
from callback_sink.sink.errors import SpoolError, SpoolFull

__all__ = ["Batch", "Record", "Spool", "SpoolLocked", "encode"]

log = logs.get("spool")

T = TypeVar("T")

#: Segments close past this size, so that disk space comes back while a long backlog drains.
SEGMENT_BYTES = 2 * 1024 * 1024
#: How long :meth:`Spool.open` waits for the directory lock by default: a previous ingress
#: on the same directory may still be finishing its shutdown, or a sibling draining it.
LOCK_WAIT = 30.0
_LOCK_POLL = 0.05
#: Below this much free space on the file system (or the spool's own bound, if smaller) the
#: spool reports itself unhealthy: the next append would likely fail with ENOSPC.
DISK_RESERVE = 64 * 1024 * 1024
#: After a failed write, how often :meth:`Spool.health` probes whether the disk writes again.
REPROBE_INTERVAL = 1.0


class SpoolLocked(SpoolError):
    """Another process holds the spool directory's lock."""


class Spool:
    """An append-only, fsynced, bounded on-disk queue of callbacks with one reader.

    ``async with Spool(directory, max_bytes)`` opens (locks and recovers) and closes it.
    """

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        lock_wait: float = LOCK_WAIT,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes or max(1, min(SEGMENT_BYTES, max_bytes // 8))
        self._lock_wait = lock_wait
        self._disk_reserve = min(DISK_RESERVE, max_bytes)
        self._segments: list[files.Segment] = []
        self._last_seq = 0
        self._active: files.Segment | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._reserved = 0
        self._appended = asyncio.Event()
        self._open = False
        self._write_error: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._probed_at = 0.0

    async def __aenter__(self) -> Spool:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def records(self) -> int:
        """Records not yet confirmed by the broker."""
        return sum(segment.records for segment in self._segments)

    @property
    def bytes(self) -> int:
        """Bytes of segment files on disk."""
        return sum(segment.size for segment in self._segments)

    @property
    def oldest(self) -> files.Segment | None:
        """The oldest segment holding unconfirmed records (the drainer's next batch)."""
        return next((s for s in self._segments if s.committed < s.size), None)

    @property
    def free(self) -> int:
        """Bytes an append may still take: within the bound and the file system's free space;
        0 when the spool is closed or its last write failed."""
        if not self._open or self._write_error is not None:
            return 0
        quota = max(0, self.max_bytes - self.bytes - self._reserved)
        return min(quota, self._disk_room())

    def health(self) -> str | None:
        """None while appends can be expected to succeed, else a short reason: the last write
        failed (until a write succeeds again), or the file system is nearly full."""
        if not self._open:
            return "spool not open"
        if self._write_error is not None:
            self._reprobe()
            return f"spool write failed: {self._write_error}"
        if self._disk_room() < self._disk_reserve:
            return "spool disk nearly full"
        return None

    async def open(self) -> None:
        """Lock the directory and recover what an earlier process left, torn tail included."""
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
            self._lock_fd = await self._lock()
            await asyncio.to_thread(files.probe_write, self.directory)
            self._segments, self._last_seq = await asyncio.to_thread(files.recover, self.directory)
        except OSError as exc:
            self._unlock()
            raise SpoolError(f"cannot open spool {self.directory}: {files.describe(exc)}") from None
        self._open = True
        self._write_error = None
        if self._segments:
            self._appended.set()
        log.info("spool.opened", directory=str(self.directory), records=self.records,
                 bytes=self.bytes, segments=len(self._segments))  # fmt: skip

    async def close(self) -> None:
        """Write what is queued, close the segment and release the directory."""
        if not self._open:
            return
        async with self._write_lock:
            if self._pending:
                await _finish(self._flush())
            self._open = False
            self._seal()
        if self._probe is not None:
            await asyncio.gather(self._probe, return_exceptions=True)
        self._unlock()

    async def append(self, record: Record) -> None:
        """Return once ``record`` is on stable storage; :class:`SpoolFull` when out of room."""
        if not self._open:
            raise SpoolError("spool is not open")
        data = encode(record)
        used = self.bytes + self._reserved
        if used + len(data) > self.max_bytes:
            raise SpoolFull(used, self.max_bytes, len(data))
        self._reserved += len(data)
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, written))
        async with self._write_lock:
            if self._pending:
                await _finish(self._flush())
        await written

    async def wait_for_records(self) -> None:
        """Return once the spool holds a record."""
        while self.records == 0:
            self._appended.clear()
            await self._appended.wait()

    async def read_batch(self, limit: int) -> Batch | None:
        """Up to ``limit`` unconfirmed records of the oldest segment, or None when none is left."""
        await self._reclaim()
        segment = self.oldest
        if segment is None:
            return None
        return await asyncio.to_thread(files.read, segment, segment.committed, segment.size, limit)

    async def commit(self, batch: Batch, confirmed: int) -> None:
        """Mark the first ``confirmed`` records of ``batch`` as published; free what can go."""
        if confirmed == 0 and batch.records:
            return
        offset = batch.end if confirmed == len(batch.records) else batch.ends[confirmed - 1]
        segment = next((s for s in self._segments if s.seq == batch.segment), None)
        if segment is None or offset <= segment.committed:
            return
        if segment is self._active or offset < segment.size:
            try:
                await _finish(asyncio.to_thread(files.write_ack, segment.path, offset))
            except OSError as exc:
                raise SpoolError(f"cannot record the committed offset: {exc}") from exc
        segment.committed = offset
        segment.records -= confirmed
        await self._reclaim()

    async def _lock(self) -> int:
        fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + self._lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise SpoolLocked(
                        f"spool {self.directory} is locked by another process"
                    ) from None
            await asyncio.sleep(_LOCK_POLL)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _seal(self) -> None:
        """Stop appending to the active segment; it becomes an ordinary old one."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._active = None, None

    def _disk_room(self) -> int:
        try:
            return files.disk_room(self.directory)
        except OSError:
            return 0

    async def _flush(self) -> None:
        """Write and fsync every queued record in one go (the caller holds the write lock)."""
        batch, self._pending = self._pending, []
        data = b"".join(item for item, _ in batch)
        self._reserved -= len(data)
        try:
            if self._active is None or self._active.size >= self._segment_bytes:
                await self._rotate()
            assert self._active is not None and self._fd is not None
            segment = self._active
            await asyncio.to_thread(files.write_durably, self._fd, data, segment.size)
        except OSError as exc:
            await self._write_failed(exc)
            log.error("spool.write_failed", error=str(exc), records=len(batch))
            _settle(batch, SpoolError(f"spool write failed: {exc}"))
            return
        segment.size += len(data)
        segment.records += len(batch)
        self._write_error = None
        _settle(batch, None)
        self._appended.set()

    async def _write_failed(self, exc: OSError) -> None:
        """Never trust a segment after a failed write or fsync: the next flush starts anew.
        A segment left empty goes, so that failing writes do not pile up empty files."""
        self._write_error = files.describe(exc, short=True)
        self._probed_at = time.monotonic()
        segment = self._active
        self._seal()
        if segment is not None and segment.size == 0:
            self._segments.remove(segment)
            try:
                await asyncio.to_thread(files.discard, segment.path)
            except OSError as error:
                log.warning("spool.discard_failed", segment=segment.path.name, error=str(error))

    def _reprobe(self) -> None:
        """In the background, try a small fsynced write; clear the error if it succeeds."""
        now = time.monotonic()
        if (self._probe is not None and not self._probe.done()) or (
            now - self._probed_at < REPROBE_INTERVAL
        ):
            return
        self._probed_at = now

        async def probe() -> None:
            try:
                await asyncio.to_thread(files.probe_write, self.directory)
            except OSError:
                return
            if self._disk_room() >= self._disk_reserve:
                self._write_error = None

        try:
            self._probe = asyncio.get_running_loop().create_task(probe())
        except RuntimeError:  # no running loop: the next append will tell
            self._probe = None

    async def _rotate(self) -> None:
        self._seal()
        seq = self._last_seq + 1
        path = files.segment_path(self.directory, seq)
        self._fd = await asyncio.to_thread(files.create, path)
        self._last_seq = seq
        self._active = files.Segment(seq, path, size=0, committed=0, records=0)
        self._segments.append(self._active)

    async def _reclaim(self) -> None:
        """Delete every segment confirmed to its end, the active one included."""
        active = self._active
        if active is not None and active.committed >= active.size:
            async with self._write_lock:
                if self._active is active and active.committed >= active.size:
                    self._seal()
        done = [s for s in self._segments if s is not self._active and s.committed >= s.size]
        if done:
            await _finish(asyncio.to_thread(files.delete, [s.path for s in done]))
            self._segments = [s for s in self._segments if s not in done]


def _settle(batch: list[tuple[bytes, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, written in batch:
        if written.done():  # its writer was cancelled
            continue
        if error is None:
            written.set_result(None)
        else:
            written.set_exception(error)


async def _finish(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile (then re-raise):
    a disk operation and the bookkeeping after it must not be torn apart."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()
