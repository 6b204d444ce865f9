"""A smoke run of the benchmark (``bench/bench.py --quick``), so that its code cannot rot.

A few hundred callbacks per scenario, one round, the ingress with one and two processes, no
FastAPI + Celery. It asserts only that the benchmark ran and counted every callback: no
non-200 answer, none lost, none handled twice. No timing is asserted: figures on a shared
machine are not a test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


def test_quick_bench_runs_and_counts_every_callback(
    tmp_path: Path, amqp_url: str, redis_url: str
) -> None:
    """The fixtures skip (or fail under CI=true) when RabbitMQ or Redis is missing; the
    benchmark itself talks to 127.0.0.1:5672 and :6379, as those fixtures do."""
    if shutil.which("wrk") is None and os.geteuid() != 0:
        pytest.skip("wrk is missing and cannot be installed without root")
    bench = REPO / "bench" / "bench.py"
    run = subprocess.run(
        [sys.executable, str(bench), "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    (path,) = tmp_path.glob("bench-quick-*.json")
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["summary"]["clean"] is True
    results = report["results"]
    for name in ("ingress-1p-info", "ingress-1p-warning", "drain-memory", "drain-redis", "e2e"):
        assert results[name], name
    if report["ingress_processes_option"]:
        assert results["ingress-2p-info"][0]["extra"]["processes"] == 2
    for name, rounds in results.items():
        for result in rounds:
            assert "failed" not in result["extra"], (name, result["extra"].get("failed"))
            assert result["non_200"] in (0, None), name
            assert result["lost"] in (0, None), name
            assert result["twice"] in (0, None), name
    assert results["e2e"][0]["lost"] == 0 and results["e2e"][0]["twice"] == 0
    assert "| every run: non-200, lost, twice | counted | all 0 |" in run.stdout
