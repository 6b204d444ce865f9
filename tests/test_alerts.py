"""deploy/: the alert rules pass promtool and fire from synthetic series; every metric the
dashboard queries exists in a real scrape of a real ingress and a real worker."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml

from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from tests.alert_fixtures import (
    FIXTURE_TESTS,
    INGRESS_FIXTURE,
    WORKER_FIXTURE,
    alert_names,
    identities,
    render,
    scrape_texts,
    stack_env,
)
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
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_every_alert_has_a_severity_and_a_runbook_section_in_the_docs() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text(encoding="utf-8")
    sections = {m.lower() for m in re.findall(r"^## (\w+)$", runbooks, re.M)}
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in sections, f"docs/runbooks.md has no {rule['alert']}"
    assert sections == {name.lower() for name in alert_names()}, "a runbook of no alert"


def test_queue_figures_are_maxed_and_only_signed_refusals_count_near_a_ban() -> None:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    exprs = {r["alert"]: r["expr"] for g in groups for r in g["rules"]}
    for name, expr in exprs.items():
        for use in re.finditer(r"(\w+)(?: by \(queue\))? \(callback_sink_queue_\w+", expr):
            assert use.group(1) == "max", f"{name}: queue figures are reported by several targets"
    assert 'signed="yes"' in exprs["CallbackSinkNearEasemobBan"]


def test_the_alert_rules_hold_for_the_series_a_real_ingress_and_worker_export() -> None:
    result = promtool("test", "rules", "prometheus/fixtures/fixtures.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    ingress, worker = INGRESS_FIXTURE.read_text(), WORKER_FIXTURE.read_text()
    assert FIXTURE_TESTS.read_text() == render(ingress, worker), (
        "fixtures.test.yaml is stale: run `python -m tests.alert_fixtures`"
    )


async def test_the_fixtures_name_every_series_a_real_2_process_ingress_and_worker_export(
    settings: Settings, redis_url: str
) -> None:
    env = stack_env(settings.amqp_url, settings.topology_prefix, settings.spool_dir,
                    settings.secrets[0], redis_url)  # fmt: skip
    ingress, worker = await scrape_texts(env)
    hint = "the exported series changed: run `python -m tests.alert_fixtures` and review the diff"
    assert identities(ingress) == identities(INGRESS_FIXTURE.read_text()), hint
    assert identities(worker) == identities(WORKER_FIXTURE.read_text()), hint


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


def test_the_dashboard_asks_for_its_data_source_and_filters_by_job_and_instance() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            for selector in re.findall(
                r"\b(?:callback_sink|process)_[a-z_]+(\{[^}]*\})?", target["expr"]
            ):
                assert 'job=~"$job"' in selector and 'instance=~"$instance"' in selector
