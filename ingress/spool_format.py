"""The spool's record format: encoding, CRC checks and scanning a stretch of segment bytes.

A record is a header ``"CSP1" | u32 length | u32 crc32(length, payload)``, big-endian, then the
payload ``u64 spooled_at_ms | u32 len(name) | u32 len(call_id) | name | call_id | body``; the
body is the HTTP body byte for byte, the name gives the routing key, the call id the message
id. Scanning resynchronises on the next valid record after a stretch that fails the magic,
length or CRC checks, so one bad record never hides its neighbours.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from callback_sink.sink.errors import SpoolError

MAGIC = b"CSP1"
HEADER = struct.Struct(">4sII")
_FIELDS = struct.Struct(">QII")
#: A header claiming more than this is corrupt (bodies are capped far lower by the ingress).
MAX_RECORD = 256 * 1024 * 1024


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


def encode(record: Record) -> bytes:
    """The record's bytes on disk, header included."""
    name, call_id = record.name.encode(), record.call_id.encode()
    fields = _FIELDS.pack(int(record.spooled_at * 1000), len(name), len(call_id))
    payload = b"".join((fields, name, call_id, record.body))
    if len(payload) > MAX_RECORD:
        raise SpoolError(f"record of {len(payload)} bytes exceeds {MAX_RECORD}")
    return HEADER.pack(MAGIC, len(payload), _crc(len(payload), payload)) + payload


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
    if len(buf) - pos < HEADER.size:
        return None
    magic, length, crc = HEADER.unpack_from(buf, pos)
    start, end = pos + HEADER.size, pos + HEADER.size + length
    if magic != MAGIC or length > MAX_RECORD or end > len(buf):
        return None
    payload = memoryview(buf)[start:end]
    if _crc(length, payload) != crc:
        return None
    try:
        return _decode(payload), end
    except ValueError:
        return None


def scan(buf: bytes, base: int) -> Iterator[tuple[int, int, Record | None]]:
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
