"""The spool's files: segments, their committed offsets, recovery and quarantine.

Blocking file operations, each run in a worker thread by :class:`ingress.spool.Spool`.

- ``{seq:020d}.seg``: append-only segment files of records (:mod:`ingress.spool_format`),
  oldest first by ``seq``. Creating a segment fsyncs the directory.
- ``{seq:020d}.ack``: the segment's committed offset (``u64 offset | u32 crc32``), pwritten and
  fsynced after each confirmed batch; every record below it was confirmed by the broker. A
  segment confirmed to its end is deleted, ``.seg`` before ``.ack`` (an orphaned ``.ack`` is
  removed at the next open).
- ``corrupt/{segment}.{offset}``: a copy of every unreadable stretch found in the middle of a
  segment, kept for a person to look at before the drainer moves past it.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from callback_sink.ingress.spool_format import HEADER, MAGIC, Batch, Record, scan
from callback_sink.sink import logs

log = logs.get("spool")

_ACK = struct.Struct(">QI")
QUARANTINE = "corrupt"


@dataclass(slots=True)
class Segment:
    seq: int
    path: Path
    size: int  # bytes written and fsynced
    committed: int  # every record below this offset is confirmed
    records: int  # records at or past ``committed``


def segment_path(directory: Path, seq: int) -> Path:
    return directory / f"{seq:020d}.seg"


def has_segments(directory: Path) -> bool:
    """Whether ``directory`` holds any segment file (a cheap look, without its lock)."""
    try:
        return any(directory.glob("*.seg"))
    except OSError:
        return False


def write_durably(fd: int, data: bytes, size: int) -> None:
    """Append ``data`` and fsync; on failure cut the file back to ``size`` and raise."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.ftruncate(fd, size)
        raise
    os.fsync(fd)


def create(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    _ack_path(path).unlink(missing_ok=True)  # a stale offset must never apply to a new file
    fd = os.open(path, flags, 0o600)
    try:
        fsync_dir(path.parent)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def discard(path: Path) -> None:
    """Remove a segment that holds nothing (after a failed first write)."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ack_path(segment: Path) -> Path:
    return segment.with_suffix(".ack")


def write_ack(segment: Path, offset: int) -> None:
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


def delete(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        _ack_path(path).unlink(missing_ok=True)
    if paths:
        fsync_dir(paths[0].parent)


def _read_from(path: Path, start: int, stop: int) -> bytes:
    with path.open("rb") as file:
        file.seek(start)
        return file.read(stop - start)


def quarantine(segment: Path, offset: int, data: bytes) -> Path | None:
    """Keep a copy of an unreadable stretch in ``corrupt/``; the new copy's path, or None when
    it was already kept (or cannot be written: that is logged, and the drain goes on)."""
    target = segment.parent / QUARANTINE / f"{segment.name}.{offset}"
    try:
        if target.exists() and target.stat().st_size == len(data):
            return None
        target.parent.mkdir(mode=0o700, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)  # created anew below, owner-only like the spool
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(partial, flags, 0o600), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(target)
        fsync_dir(target.parent)
    except OSError as exc:
        log.error("spool.quarantine_failed", segment=segment.name, offset=offset, error=str(exc))
        return None
    return target


def _corrupt(segment: Path, offset: int, data: bytes) -> None:
    kept = quarantine(segment, offset, data)
    if kept is not None:
        log.warning(
            "spool.corrupt_record",
            segment=segment.name,
            offset=offset,
            bytes=len(data),
            action="quarantined",
            quarantine=str(kept),
        )


def read(segment: Segment, start: int, stop: int, limit: int) -> Batch:
    """Up to ``limit`` records of ``segment`` from ``start``; unreadable stretches on the way
    are quarantined and skipped."""
    records: list[Record] = []
    ends: list[int] = []
    end = stop
    buf = _read_from(segment.path, start, stop)
    for offset, stretch_end, record in scan(buf, start):
        if len(records) == limit:
            end = offset
            break
        if record is None:
            _corrupt(segment.path, offset, buf[offset - start : stretch_end - start])
            continue
        records.append(record)
        ends.append(stretch_end)
    return Batch(segment.seq, records, ends, end)


def recover(directory: Path) -> tuple[list[Segment], int]:
    """The segments still holding records, oldest first, and the highest sequence seen."""
    paths = {int(p.stem): p for p in directory.glob("*.seg") if p.stem.isdigit()}
    for ack in directory.glob("*.ack"):
        if not ack.with_suffix(".seg").exists():
            ack.unlink()
    segments: list[Segment] = []
    for seq in sorted(paths):
        segment = _recover_segment(seq, paths[seq])
        if segment.records:
            segments.append(segment)
        else:
            delete([segment.path])
    return segments, max(paths, default=0)


def pending(directory: Path) -> tuple[int, int]:
    """Records not yet confirmed in ``directory``'s segments, and the bytes of those holding
    any: a read-only look, without the lock, for a stopped ingress's last word."""
    records = size = 0
    for path in directory.glob("*.seg"):
        try:
            end = path.stat().st_size
            committed = min(_read_ack(path), end)
            found = sum(r is not None for _, _, r in scan(_read_from(path, committed, end), 0))
        except OSError:
            continue
        records += found
        size += end if found else 0
    return records, size


def _recover_segment(seq: int, path: Path) -> Segment:
    size = path.stat().st_size
    committed = _read_ack(path)
    if committed > size:
        log.warning("spool.ack_unreadable", segment=path.name, action="re-sending the segment")
        committed = 0
    records = 0
    buf = _read_from(path, committed, size)
    for offset, end, record in scan(buf, committed):
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
            _corrupt(path, offset, buf[offset - committed : end - committed])
    return Segment(seq, path, size=size, committed=committed, records=records)


def disk_room(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on ``directory``'s file system."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def probe_write(directory: Path) -> None:
    """Create, fsync and remove a small file: fails on a read-only or full file system."""
    path = directory / ".probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"\0")
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def describe(exc: OSError, *, short: bool = False) -> str:
    """``ENOSPC`` (short) or ``ENOSPC: No space left on device``; the path is said elsewhere."""
    name = errno.errorcode.get(exc.errno or 0)
    if name is None:
        return str(exc)
    return name if short else f"{name}: {exc.strerror}"


def first_spooled_at(segment: Segment) -> float | None:
    """When the first unconfirmed record of ``segment`` was spooled (seconds since the epoch),
    from its header alone; None when it cannot be read (the drainer deals with that)."""
    try:
        with segment.path.open("rb") as f:
            f.seek(segment.committed)
            head = f.read(HEADER.size + 8)
    except OSError:
        return None
    if len(head) < HEADER.size + 8 or head[:4] != MAGIC:
        return None
    (spooled_at_ms,) = struct.unpack_from(">Q", head, HEADER.size)
    return float(spooled_at_ms) / 1000
