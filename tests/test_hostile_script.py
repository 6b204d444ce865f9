"""The reproduction script of the "Harden" issue passes end to end (real ingress and worker
processes): forged replays refused, stalled connections closed with memory returned, a
process-killing handler dead-lettered as a crash loop while the others are handled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.faults
def test_the_hostile_script_finds_every_attack_answered(amqp_url: str, redis_url: str) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hostile.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASS") == 8
