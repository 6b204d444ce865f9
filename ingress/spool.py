"""The outage spool: callbacks kept on local disk while RabbitMQ cannot confirm them.

When the broker is unreachable, or a publisher confirm fails or is late, the ingress appends the
callback here and answers 200 only once the record is fsynced. :mod:`ingress.drainer`
republishes the records oldest first once the broker is back and commits them after their
confirms. One process owns a spool directory at a time (``flock`` on ``LOCK``).

On disk:

- ``{seq:020d}.seg``: append-only segment files, oldest first by ``seq``. A process appends only
  to a segment it created; it starts a new one past ``segment_bytes`` and after every restart.
  Creating a segment fsyncs the directory.
- A record: header ``"CSP1" | u32 length | u32 crc32(length, payload)``, big-endian, then the
  payload ``u64 spooled_at_ms | u32 len(name) | u32 len(call_id) | name | call_id | body``; the
  body is the HTTP body byte for byte, the name gives the routing key, the call id the
  message id.
- ``{seq:020d}.ack``: the segment's committed offset (``u64 offset | u32 crc32``), pwritten and
  fsynced after each confirmed batch; every record below it was confirmed by the broker. A
  segment confirmed to its end is deleted, ``.seg`` before ``.ack`` (an orphaned ``.ack`` is
  removed at the next open). A crash between a confirm and its ``.ack`` re-publishes at most
  one batch: at least once, and the workers deduplicate.

On open every segment is scanned from its committed offset. A stretch failing the magic, length
or CRC checks is skipped with a log line and the records around it are kept; one at the end of a
segment (a write torn by a crash or power cut, never acknowledged) is truncated away.

Writers are serialized by an :class:`asyncio.Lock` and share fsyncs (group commit): each writer
queues its record, and the one holding the lock writes and fsyncs all queued records in one
worker-thread call. The byte bound counts segment bytes on disk (confirmed records too, until
their segment is deleted) plus the records being written.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sink import logs
from sink.errors import SpoolError, SpoolFull

log = logs.get("spool")

T = TypeVar("T")

MAGIC = b"CSP1"
_HEADER = struct.Struct(">4sII")
_FIELDS = struct.Struct(">QII")
_ACK = struct.Struct(">QI")
#: A header claiming more than this is corrupt (bodies are capped far lower by the ingress).
MAX_RECORD = 256 * 1024 * 1024
#: Segments close past this size, so that disk space comes back while a long backlog drains.
SEGMENT_BYTES = 2 * 1024 * 1024
#: How long :meth:`Spool.open` waits for the directory lock: a previous ingress on the same
#: directory may still be finishing its shutdown.
LOCK_WAIT = 30.0
_LOCK_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled callback: all that republishing it needs."""

    name: str
    call_id: str
    body: bytes
    spooled_at: float = field(default_factory=time.time, compare=False)


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of one segment, oldest first; ``ends[i]`` is where record ``i`` ends on disk and
    ``end`` where the batch does (past any unreadable stretch it skipped)."""

    segment: int
    records: list[Record]
    ends: list[int]
    end: int


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int  # bytes written and fsynced
    committed: int  # every record below this offset is confirmed
    records: int  # records at or past ``committed``


def encode(record: Record) -> bytes:
    name, call_id = record.name.encode(), record.call_id.encode()
    fields = _FIELDS.pack(int(record.spooled_at * 1000), len(name), len(call_id))
    payload = b"".join((fields, name, call_id, record.body))
    if len(payload) > MAX_RECORD:
        raise SpoolError(f"record of {len(payload)} bytes exceeds {MAX_RECORD}")
    return _HEADER.pack(MAGIC, len(payload), _crc(len(payload), payload)) + payload


def _crc(length: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length.to_bytes(4, "big")))


def _decode(payload: memoryview) -> Record:
    millis, name_len, id_len = _FIELDS.unpack_from(payload)
    start = _FIELDS.size
    if start + name_len + id_len > len(payload):
        raise ValueError("field lengths exceed the record")
    name = bytes(payload[start : start + name_len]).decode()
    call_id = bytes(payload[start + name_len : start + name_len + id_len]).decode()
    return Record(name, call_id, bytes(payload[start + name_len + id_len :]), millis / 1000)


def _record_at(buf: bytes, pos: int) -> tuple[Record, int] | None:
    """The valid record starting at ``buf[pos]`` and where it ends, or None."""
    if len(buf) - pos < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(buf, pos)
    start, end = pos + _HEADER.size, pos + _HEADER.size + length
    if magic != MAGIC or length > MAX_RECORD or end > len(buf):
        return None
    payload = memoryview(buf)[start:end]
    if _crc(length, payload) != crc:
        return None
    try:
        return _decode(payload), end
    except ValueError:
        return None


def _scan(buf: bytes, base: int) -> Iterator[tuple[int, int, Record | None]]:
    """Yield ``(offset, end, record)`` per record and ``(offset, end, None)`` per unreadable
    stretch (which ends where the next valid record starts); offsets count from ``base``."""
    pos = 0
    while pos < len(buf):
        found = _record_at(buf, pos)
        if found is not None:
            yield base + pos, base + found[1], found[0]
            pos = found[1]
            continue
        resume = buf.find(MAGIC, pos + 1)
        while resume != -1 and _record_at(buf, resume) is None:
            resume = buf.find(MAGIC, resume + 1)
        stop = len(buf) if resume == -1 else resume
        yield base + pos, base + stop, None
        pos = stop


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
        self._segments: list[_Segment] = []
        self._last_seq = 0
        self._active: _Segment | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._reserved = 0
        self._appended = asyncio.Event()
        self._open = False

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
    def free(self) -> int:
        """Bytes an append may still take (0 when the spool is closed)."""
        return max(0, self.max_bytes - self.bytes - self._reserved) if self._open else 0

    async def open(self) -> None:
        """Lock the directory and recover what an earlier process left, torn tail included."""
        try:
            await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
            self._lock_fd = await self._lock()
            self._segments, self._last_seq = await asyncio.to_thread(_recover, self.directory)
        except OSError as exc:
            self._unlock()
            raise SpoolError(f"cannot open spool {self.directory}: {exc}") from exc
        self._open = True
        if self._segments:
            self._appended.set()
        log.info(
            "spool.opened",
            directory=str(self.directory),
            records=self.records,
            bytes=self.bytes,
            segments=len(self._segments),
        )

    async def close(self) -> None:
        """Write what is queued, close the segment and release the directory."""
        if not self._open:
            return
        async with self._write_lock:
            if self._pending:
                await _finish(self._flush())
            self._open = False
            self._seal()
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
        segment = next((s for s in self._segments if s.committed < s.size), None)
        if segment is None:
            return None
        return await asyncio.to_thread(_read, segment, segment.committed, segment.size, limit)

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
                await _finish(asyncio.to_thread(_write_ack, segment.path, offset))
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
                    raise SpoolError(
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
            await asyncio.to_thread(_write_durably, self._fd, data, segment.size)
        except OSError as exc:
            # Never trust a segment after a failed write or fsync: the next flush starts anew.
            self._seal()
            log.error("spool.write_failed", error=str(exc), records=len(batch))
            _settle(batch, SpoolError(f"spool write failed: {exc}"))
            return
        segment.size += len(data)
        segment.records += len(batch)
        _settle(batch, None)
        self._appended.set()

    async def _rotate(self) -> None:
        self._seal()
        seq = self._last_seq + 1
        path = self.directory / f"{seq:020d}.seg"
        self._fd = await asyncio.to_thread(_create, path)
        self._last_seq = seq
        self._active = _Segment(seq, path, size=0, committed=0, records=0)
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
            await _finish(asyncio.to_thread(_delete, [s.path for s in done]))
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


# Blocking file operations, run in a worker thread.


def _write_durably(fd: int, data: bytes, size: int) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.ftruncate(fd, size)
        raise
    os.fsync(fd)


def _create(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    _ack_path(path).unlink(missing_ok=True)  # a stale offset must never apply to a new file
    fd = os.open(path, flags, 0o600)
    try:
        _fsync_dir(path.parent)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ack_path(segment: Path) -> Path:
    return segment.with_suffix(".ack")


def _write_ack(segment: Path, offset: int) -> None:
    fd = os.open(_ack_path(segment), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, _ACK.pack(offset, zlib.crc32(offset.to_bytes(8, "big"))), 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_ack(segment: Path) -> int:
    try:
        raw = _ack_path(segment).read_bytes()
    except FileNotFoundError:
        return 0
    if len(raw) == _ACK.size:
        offset, crc = _ACK.unpack(raw)
        if zlib.crc32(offset.to_bytes(8, "big")) == crc:
            return int(offset)
    log.warning("spool.ack_unreadable", segment=segment.name, action="re-sending the segment")
    return 0


def _delete(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        _ack_path(path).unlink(missing_ok=True)
    if paths:
        _fsync_dir(paths[0].parent)


def _read_from(path: Path, start: int, stop: int) -> bytes:
    with path.open("rb") as file:
        file.seek(start)
        return file.read(stop - start)


def _read(segment: _Segment, start: int, stop: int, limit: int) -> Batch:
    records: list[Record] = []
    ends: list[int] = []
    end = stop
    for offset, stretch_end, record in _scan(_read_from(segment.path, start, stop), start):
        if len(records) == limit:
            end = offset
            break
        if record is None:
            log.warning(
                "spool.corrupt_record",
                segment=segment.path.name,
                offset=offset,
                bytes=stretch_end - offset,
                action="skipped",
            )
            continue
        records.append(record)
        ends.append(stretch_end)
    return Batch(segment.seq, records, ends, end)


def _recover(directory: Path) -> tuple[list[_Segment], int]:
    """The segments still holding records, oldest first, and the highest sequence seen."""
    paths = {int(p.stem): p for p in directory.glob("*.seg") if p.stem.isdigit()}
    for ack in directory.glob("*.ack"):
        if not ack.with_suffix(".seg").exists():
            ack.unlink()
    segments: list[_Segment] = []
    for seq in sorted(paths):
        segment = _recover_segment(seq, paths[seq])
        if segment.records:
            segments.append(segment)
        else:
            _delete([segment.path])
    return segments, max(paths, default=0)


def _recover_segment(seq: int, path: Path) -> _Segment:
    size = path.stat().st_size
    committed = _read_ack(path)
    if committed > size:
        log.warning("spool.ack_unreadable", segment=path.name, action="re-sending the segment")
        committed = 0
    records = 0
    for offset, end, record in _scan(_read_from(path, committed, size), committed):
        if record is not None:
            records += 1
        elif end == size:
            log.warning(
                "spool.torn_record",
                segment=path.name,
                offset=offset,
                bytes=end - offset,
                action="truncated",
            )
            os.truncate(path, offset)
            with path.open("rb+") as file:
                os.fsync(file.fileno())
            size = offset
        else:
            log.warning(
                "spool.corrupt_record",
                segment=path.name,
                offset=offset,
                bytes=end - offset,
                action="skipped",
            )
    return _Segment(seq, path, size=size, committed=committed, records=records)
