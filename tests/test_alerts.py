"""deploy/: the alert rules pass promtool and fire from synthetic series; every metric the
dashboard queries exists in a real scrape of a real ingress and a real worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.needs import missing
from tests.processes import ROOT, SinkProcess
from tests.scrape import scrape
from tests.test_metrics import ingress_env

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "callback-sink.json"
#: Metric names in a PromQL expression (functions are followed by a parenthesis, labels by =).
METRIC = re.compile(r"\b((?:callback_sink|process)_[a-z_]+)\b(?!\s*\()")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        missing("promtool is not installed (`make tools`: deploy/ensure-tools.sh)")
    return subprocess.run(
        ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
    )


def test_the_alert_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", "prometheus/alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_alert_fires_from_synthetic_series_in_promtool_test_rules() -> None:
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts.test.yaml").read_text()))
    rules = set(re.findall(r"- alert: (\w+)", (DEPLOY / "prometheus/alerts.yaml").read_text()))
    assert rules and tested == rules


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(expr.strip() for expr in exprs)
    return exprs


def dashboard_metrics() -> set[str]:
    return {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}


def test_the_dashboard_queries_throughput_spool_queues_handlers_and_rest_429s() -> None:
    names = dashboard_metrics()
    for wanted in ("callback_sink_ingress_requests_total", "callback_sink_spool_records",
                   "callback_sink_spool_oldest_age_seconds", "callback_sink_queue_messages",
                   "callback_sink_worker_handled_total", "callback_sink_rest_requests_total",
                   "callback_sink_worker_handler_seconds_bucket"):  # fmt: skip
        assert wanted in names
    assert any('status="429"' in expr for expr in dashboard_exprs())


async def test_every_metric_the_dashboard_queries_exists_in_a_real_scrape(
    settings: Settings, redis_url: str
) -> None:
    port, worker_port = free_port(), free_port()
    ingress = SinkProcess("ingress", ingress_env(settings, port))
    worker = SinkProcess("worker", {
        **ingress_env(settings, port), "SINK_DEDUP_URL": redis_url,
        "SINK_WORKER_PORT": str(worker_port),
    })  # fmt: skip
    try:
        await ingress.start("ingress.listening")
        await worker.start("worker.started")
        found = await scrape(f"http://127.0.0.1:{port}/metrics")
        found.update(await scrape(f"http://127.0.0.1:{worker_port}/metrics"))
    finally:
        await ingress.stop()
        await worker.stop()
    scraped = {name for name, _ in found}
    assert dashboard_metrics() - scraped == set()
