"""The outage spool keeps every fsynced record until it is committed, across restarts and torn
writes, within its byte bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import callback_sink.ingress.spool as spool_module
from callback_sink.ingress.spool import Record, Spool, encode
from callback_sink.sink.errors import SpoolError, SpoolFull

ROOT = Path(__file__).resolve().parent.parent


def record(i: int, size: int = 20) -> Record:
    return Record("muc:apply", f"XXXX#XXXX_{i}", b'{"n":%d,"pad":"%s"}' % (i, b"x" * size))


async def drain(spool: Spool, limit: int = 1000) -> list[Record]:
    """Read and commit everything, oldest first."""
    out: list[Record] = []
    while (batch := await spool.read_batch(limit)) is not None:
        out.extend(batch.records)
        await spool.commit(batch, len(batch.records))
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with Spool(tmp_path / "spool", 1024 * 1024, lock_wait=0) as opened:
        yield opened


async def test_records_come_back_oldest_first_and_leave_nothing_once_committed(
    spool: Spool,
) -> None:
    written = [record(i) for i in range(5)]
    for r in written:
        await spool.append(r)
    assert spool.records == 5
    assert spool.bytes == sum(len(encode(r)) for r in written)
    batch = await spool.read_batch(3)
    assert batch is not None
    assert [r.call_id for r in batch.records] == ["XXXX#XXXX_0", "XXXX#XXXX_1", "XXXX#XXXX_2"]
    assert batch.records[0] == written[0]
    await spool.commit(batch, 3)
    assert spool.records == 2
    assert await drain(spool) == written[3:]
    assert (spool.records, spool.bytes) == (0, 0)
    assert segments(spool.directory) == []
    assert list(spool.directory.glob("*.ack")) == []


async def test_a_partly_confirmed_batch_commits_only_its_leading_records(spool: Spool) -> None:
    for i in range(4):
        await spool.append(record(i))
    batch = await spool.read_batch(4)
    assert batch is not None
    await spool.commit(batch, 1)  # the second publish failed: it and those after stay
    assert [r.call_id for r in await drain(spool)] == [f"XXXX#XXXX_{i}" for i in (1, 2, 3)]


async def test_a_reopened_spool_keeps_exactly_the_unconfirmed_records(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory, 1024 * 1024, lock_wait=0) as first:
        for i in range(6):
            await first.append(record(i))
        batch = await first.read_batch(2)
        assert batch is not None
        await first.commit(batch, 2)
    async with Spool(directory, 1024 * 1024, lock_wait=0) as second:
        assert second.records == 4
        await second.append(record(6))  # a restart appends to a new segment, after the old
        assert [r.call_id for r in await drain(second)] == [f"XXXX#XXXX_{i}" for i in range(2, 7)]
    assert segments(directory) == []


async def test_segments_rotate_and_are_deleted_as_they_drain(tmp_path: Path) -> None:
    async with Spool(tmp_path / "s", 1024 * 1024, segment_bytes=300, lock_wait=0) as spool:
        for i in range(20):
            await spool.append(record(i))
        assert len(segments(spool.directory)) > 3
        batch = await spool.read_batch(1000)
        assert batch is not None and len(batch.records) < 20  # one segment at a time
        await spool.commit(batch, len(batch.records))
        assert segments(spool.directory)[0].name != "00000000000000000001.seg"
        rest = await drain(spool)
        assert [r.call_id for r in [*batch.records, *rest]] == [f"XXXX#XXXX_{i}" for i in range(20)]
        assert segments(spool.directory) == []


async def test_a_torn_last_record_is_skipped_with_a_log_line_and_the_records_before_kept(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory, 1024 * 1024, lock_wait=0) as spool:
        for i in range(3):
            await spool.append(record(i))
    [segment] = segments(directory)
    intact = segment.stat().st_size
    with segment.open("ab") as file:  # a power cut in the middle of the fourth write
        file.write(encode(record(3))[:25])
    with capture_logs() as logs:
        async with Spool(directory, 1024 * 1024, lock_wait=0) as spool:
            assert spool.records == 3
            assert segment.stat().st_size == intact
            await spool.append(record(4))
            got = await drain(spool)
    assert [r.call_id for r in got] == [f"XXXX#XXXX_{i}" for i in (0, 1, 2, 4)]
    [torn] = [line for line in logs if line["event"] == "spool.torn_record"]
    assert torn["offset"] == intact
    assert torn["bytes"] == 25


async def test_a_corrupt_record_in_the_middle_is_skipped_and_its_neighbours_kept(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory, 1024 * 1024, lock_wait=0) as spool:
        for i in range(3):
            await spool.append(record(i))
    [segment] = segments(directory)
    data = bytearray(segment.read_bytes())
    data[len(encode(record(0))) + 30] ^= 0xFF  # one flipped bit in the second body
    segment.write_bytes(bytes(data))
    with capture_logs() as logs:
        async with Spool(directory, 1024 * 1024, lock_wait=0) as spool:
            assert spool.records == 2
            got = await drain(spool)
    assert [r.call_id for r in got] == ["XXXX#XXXX_0", "XXXX#XXXX_2"]
    assert any(line["event"] == "spool.corrupt_record" for line in logs)


async def test_a_spool_left_by_a_killed_process_opens_with_its_records(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from callback_sink.ingress.spool import Record, Spool

        async def main():
            spool = Spool({str(directory)!r}, 1 << 20)
            await spool.open()
            for i in range(10):
                await spool.append(Record("muc:kick", f"killed-{{i}}", b"{{}}"))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, cwd=ROOT)
    assert await asyncio.wait_for(process.wait(), 30) == -signal.SIGKILL
    async with Spool(directory, 1 << 20, lock_wait=0) as spool:
        assert [r.call_id for r in await drain(spool)] == [f"killed-{i}" for i in range(10)]


async def test_the_byte_bound_refuses_what_does_not_fit_and_frees_room_once_drained(
    tmp_path: Path,
) -> None:
    size = len(encode(record(0)))
    async with Spool(tmp_path / "spool", 3 * size, lock_wait=0) as spool:
        for i in range(3):
            await spool.append(record(i))
        with pytest.raises(SpoolFull) as full:
            await spool.append(record(3))
        assert (full.value.used, full.value.limit, full.value.needed) == (3 * size, 3 * size, size)
        assert spool.bytes <= spool.max_bytes
        assert spool.free == 0
        await drain(spool)
        assert spool.free == 3 * size
        await spool.append(record(4))


async def test_concurrent_appends_are_all_kept_and_share_fsyncs(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync)
    await asyncio.gather(*(spool.append(record(i)) for i in range(200)))
    assert spool.records == 200
    assert fsyncs < 100  # group commit: one fsync covers every record queued meanwhile
    got = await drain(spool)
    assert sorted(r.call_id for r in got) == sorted(f"XXXX#XXXX_{i}" for i in range(200))


async def test_a_second_spool_on_the_same_directory_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolError, match="locked"):
        await Spool(spool.directory, 1024, lock_wait=0).open()


async def test_a_closed_spool_refuses_appends(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1024, lock_wait=0)
    with pytest.raises(SpoolError):
        await spool.append(record(0))
