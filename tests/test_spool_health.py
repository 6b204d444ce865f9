"""The spool says honestly whether it can write, cleans up after failed writes, and keeps a
copy of every corrupt record it has to step over."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callback_sink.ingress import spool_files
from callback_sink.ingress.spool import Record, Spool, encode
from callback_sink.sink.errors import SpoolError
from tests.needs import missing


def record(i: int) -> Record:
    return Record("muc:apply", f"XXXX#XXXX_{i}", b'{"n":%d}' % i)


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """While ``full[0]`` is true, every write to a spool segment fails with ENOSPC."""
    full = [True]
    real_write = os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(spool_files.os, "write", write)
    yield full


async def test_failed_writes_leave_no_empty_segment_and_an_unhealthy_spool_until_one_succeeds(
    tmp_path: Path, disk_full: list[bool]
) -> None:
    disk_full[0] = False
    async with Spool(tmp_path / "spool", 1 << 20, segment_bytes=1, lock_wait=0) as spool:
        await spool.append(record(0))
        assert spool.health() is None
        before = segment_files(spool.directory)
        disk_full[0] = True
        for i in range(1, 20):
            with pytest.raises(SpoolError, match="No space left on device"):
                await spool.append(record(i))
        assert segment_files(spool.directory) == before
        assert spool.health() == "spool write failed: ENOSPC"
        assert spool.free == 0
        assert spool.records == 1
        disk_full[0] = False
        await spool.append(record(20))
        assert spool.health() is None
        assert spool.free > 0
        assert spool.records == 2


async def test_a_nearly_full_file_system_makes_the_spool_unhealthy_whatever_its_own_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Spool(tmp_path / "spool", 1 << 30, lock_wait=0) as spool:
        assert spool.health() is None
        monkeypatch.setattr(spool_files, "disk_room", lambda directory: 4096)
        assert spool.health() == "spool disk nearly full"
        assert spool.free == 4096


async def test_a_closed_spool_is_not_healthy(tmp_path: Path) -> None:
    assert Spool(tmp_path / "spool", 1 << 20).health() == "spool not open"


async def test_a_corrupt_record_is_copied_to_the_quarantine_with_its_segment_and_offset(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    async with Spool(directory, 1 << 20, lock_wait=0) as spool:
        for i in range(3):
            await spool.append(record(i))
    [segment] = directory.glob("*.seg")
    data = bytearray(segment.read_bytes())
    offset, length = len(encode(record(0))), len(encode(record(1)))
    data[offset + 20] ^= 0xFF
    segment.write_bytes(bytes(data))
    with capture_logs() as logs:
        async with Spool(directory, 1 << 20, lock_wait=0) as spool:
            while (batch := await spool.read_batch(10)) is not None:
                assert [r.call_id for r in batch.records] == ["XXXX#XXXX_0", "XXXX#XXXX_2"]
                await spool.commit(batch, len(batch.records))
    kept = directory / "corrupt" / f"{segment.name}.{offset}"
    assert kept.read_bytes() == bytes(data[offset : offset + length])
    [line] = [line for line in logs if line["event"] == "spool.corrupt_record"]
    assert (line["offset"], line["action"]) == (offset, "quarantined")
    assert line["quarantine"] == str(kept)
    assert not segment.exists()  # drained past it: the copy is all that is left


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB file system of its own (needs root: skipped otherwise, failed under CI)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)])
    if done.returncode != 0:
        missing("cannot mount a tmpfs here (root without CAP_SYS_ADMIN?)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_really_full_disk_refuses_appends_without_piling_up_segment_files(
    tiny_tmpfs: Path,
) -> None:
    big = Record("muc:apply", "big", b"x" * 60_000)
    async with Spool(tiny_tmpfs / "spool", 1 << 30, segment_bytes=100_000, lock_wait=0) as spool:
        kept = 0
        with pytest.raises(SpoolError, match="write failed"):
            for _ in range(10):
                await spool.append(big)
                kept += 1
        for _ in range(5):
            with pytest.raises(SpoolError, match="write failed"):
                await spool.append(big)
        assert spool.health() == "spool write failed: ENOSPC"
        assert spool.records == kept
        assert all(p.stat().st_size > 0 for p in spool.directory.glob("*.seg"))
