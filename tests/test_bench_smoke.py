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

from tests.needs import missing

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(600)


def test_quick_bench_runs_and_counts_every_callback(
    tmp_path: Path, amqp_url: str, redis_url: str
) -> None:
    """The fixtures skip (or fail under CI=true) when RabbitMQ or Redis is missing; the
    benchmark itself talks to 127.0.0.1:5672 and :6379, as those fixtures do."""
    if shutil.which("wrk") is None and os.geteuid() != 0:
        missing("wrk is not installed (`make tools`: deploy/ensure-tools.sh) and needs root to be")
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
    reference = results["e2e"][0]["extra"]["reference"]  # the same rate through no sink code
    assert reference["count"] == 100 and reference["non_200"] == 0
    assert reference["lost"] == 0 and reference["twice"] == 0
    assert reference["e2e_ms"]["p99"] > 0
    assert report["machine"]["echo_cpu_us"]["200/s"] > 0
    assert "| every run: non-200, lost, twice | counted | all 0 |" in run.stdout


#: Run inside bench/ (the benchmark's modules import each other by their plain names): the
#: table of made-up results, with the verdict column of the rows the marks are about.
TABLE_SCRIPT = """
import json
from common import Config, Result
from table import summarize

def row(value, other, **extra):
    return [Result(value, "made up", 0, 0, 0, extra={"cpu_percent": {"other": other}, **extra})]

results = {
    "bare-pub-1p": row(100.0, 5.0),
    "ingress-1p-info": row(110.0, 5.0),
    "ingress-1p-warning": row(100.0, 5.0),
    "bare-consume-setnx": row(100.0, 40.0),
    "drain-redis": row(90.0, 5.0),
    "e2e": row(50.0, 5.0, ingress_processes=2, levels={},
               reference={"e2e_ms": {"p99": 61.0}, "machine_cores": 1.5, "non_200": 0,
                          "lost": 0, "twice": 0}),
}
config = Config(1, 1.0, 0.0, 16, 10, 1.0, (0.5,), 0, False)
table, _ = summarize(results, config)
rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.splitlines()[2:]]
cells = {row[1]: row for row in rows}
print(json.dumps(cells))
"""


def test_verdicts_on_a_busy_machine_or_a_negative_cost_are_marked() -> None:
    """No services needed: the table alone, from made-up figures."""
    run = subprocess.run(
        [sys.executable, "-c", TABLE_SCRIPT],
        cwd=REPO / "bench",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cells = json.loads(run.stdout)
    verdict = {label: row[7] for label, row in cells.items()}
    assert verdict["ingress 1p / bare publisher 1p"] == "PASS"  # 5 % other CPU: quiet
    assert verdict["worker drain Redis / bare consume + SET NX"] == "PASS (noise?)"  # 40 %
    # info faster than warning: a cost of -10 % cannot be true, whatever the other CPU
    assert cells["info-log cost: 1 − info / warning (1 process)"][3] == "-10.0%"
    assert verdict["info-log cost: 1 − info / warning (1 process)"] == "PASS (noise?)"
    assert "end to end max: ingress (2 processes) + worker (Redis dedup)" in cells
    (reference,) = (row for label, row in cells.items() if label.startswith("its bare reference"))
    assert reference[3] == "61.0 ms" and reference[7] == "also ≥ 50 ms"
