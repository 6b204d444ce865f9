"""Files holding secrets or callbacks are created readable by their owner only, from the start,
and never through a file or symlink someone planted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from callback_sink.ingress.spool_files import QUARANTINE, quarantine
from callback_sink.sink import devsecret


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_development_secret_is_created_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    old = os.umask(0)  # the most permissive umask: the mode must come from the open itself
    try:
        secret = devsecret.ensure_dev_secret()
    finally:
        os.umask(old)
    assert mode(tmp_path / ".sink-dev-secret") == 0o600
    assert devsecret.ensure_dev_secret() == secret


def test_the_development_secret_is_never_written_through_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "elsewhere"
    (tmp_path / ".sink-dev-secret").symlink_to(target)  # dangling: exists() is False
    with pytest.raises(FileExistsError):
        devsecret.ensure_dev_secret()
    assert not target.exists()


def test_a_quarantined_spool_record_is_owner_only(tmp_path: Path) -> None:
    segment = tmp_path / "0000000001.seg"
    segment.write_bytes(b"")
    old = os.umask(0)
    try:
        kept = quarantine(segment, 42, b"garbage")
    finally:
        os.umask(old)
    assert kept == tmp_path / QUARANTINE / "0000000001.seg.42"
    assert kept.read_bytes() == b"garbage"
    assert mode(kept) == 0o600
    assert mode(kept.parent) == 0o700
