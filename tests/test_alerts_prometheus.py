"""A real Prometheus server with the SHIPPED rules (deploy/prometheus/alerts.yaml, unchanged,
`for:` durations included) and the shipped scrape jobs, against a real 2-process ingress and a
real worker: quiet while all is healthy, and the right alert pending when a worker stops with
work queued or the ingress goes away.

Alerts are checked in their ``pending`` state: a rule enters it at the first evaluation its
expression holds, whatever its ``for:``, so the shipped durations need no shortening. The
scrape and evaluation intervals are 1 s (the shipped 15 s would make the test minutes long).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client import CollectorRegistry

from callback_sink.sink.metrics import QueueMetrics
from callback_sink.sink.settings import Settings
from callback_sink.testing.ports import free_port
from callback_sink.worker.depth import QueueDepths
from tests.alert_fixtures import ALERTS, INGRESS_JOB, WORKER_JOB, stack_env
from tests.conftest import callback, signed
from tests.needs import missing
from tests.processes import ROOT
from tests.stack import running
from tests.test_metrics import post_fresh
from tests.waiting import until

SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "callback-sink.json"
#: Seconds between scrapes and between rule evaluations of the test's server.
INTERVAL = "1s"
#: Healthy evaluations in a row with no alert pending or firing.
QUIET_EVALUATIONS = 3
#: Callbacks left in the work queue once the worker stopped.
BACKLOG = 5
#: What Grafana puts for the dashboard's variables with "All" selected, and a rate window.
GRAFANA_ALL = {"$job": "callback-sink.*", "$instance": ".*", "$__rate_interval": "1m"}


def scrape_config_for(targets: dict[str, str]) -> dict[str, Any]:
    """The shipped scrape config with static targets for its jobs and 1 s intervals."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    jobs = config["scrape_configs"]
    assert {job["job_name"] for job in jobs} == set(targets), "the shipped jobs changed"
    config["global"] = {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL}
    config["rule_files"] = [str(ALERTS)]
    config["scrape_configs"] = [
        {"job_name": job["job_name"], "static_configs": [{"targets": [targets[job["job_name"]]]}]}
        for job in jobs
    ]
    return config


class PromAPI:
    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        self.base, self.http = base, http

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.base}{path}", params=params) as response:
            body = await response.json()
            assert body["status"] == "success", body
            return body["data"]

    async def ready(self) -> bool:
        try:
            async with self.http.get(f"{self.base}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def query(self, expr: str) -> list[dict[str, Any]]:
        return list((await self.get("/api/v1/query", query=expr))["result"])

    async def active(self) -> list[tuple[str, str, dict[str, str]]]:
        """The alerts pending or firing: (name, state, labels)."""
        alerts = (await self.get("/api/v1/alerts"))["alerts"]
        return [(a["labels"]["alertname"], a["state"], a["labels"]) for a in alerts]

    async def last_evaluation(self) -> str:
        (group,) = (await self.get("/api/v1/rules"))["groups"]
        return str(group["lastEvaluation"])


@contextlib.asynccontextmanager
async def prometheus(config: dict[str, Any], tmp: Path) -> AsyncIterator[PromAPI]:
    binary = shutil.which("prometheus")
    if binary is None:
        missing("the prometheus server is not installed (`make tools`: deploy/ensure-tools.sh)")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (tmp / "prometheus.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            binary, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            api = PromAPI(f"http://127.0.0.1:{port}", http)
            await until(api.ready, what="Prometheus to be ready")
            yield api
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def queue_panel_expr() -> str:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (expr,) = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel["targets"]
        if "callback_sink_queue_messages" in target["expr"]
    ]
    for variable, value in GRAFANA_ALL.items():
        expr = expr.replace(variable, value)
    return str(expr)


async def test_a_real_prometheus_with_the_shipped_rules_stays_quiet_then_sees_a_backlog_and_the_ingress_down(  # noqa: E501
    settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    env = stack_env(settings.amqp_url, settings.topology_prefix, settings.spool_dir,
                    settings.secrets[0], redis_url)  # fmt: skip
    async with running(env) as stack:
        ingress_target = f"127.0.0.1:{stack.ingress_port}"
        targets = {INGRESS_JOB: ingress_target, WORKER_JOB: f"127.0.0.1:{stack.worker_port}"}
        async with prometheus(scrape_config_for(targets), tmp_path / "prometheus") as api:

            async def scraped() -> bool:
                up = await api.query("up == 1")
                ready = await api.query("callback_sink_worker_ready == 1")
                return len(up) == 2 and len(ready) == 1

            await until(scraped, what="both targets scraped, the worker ready")
            # Rules evaluated before the first scrapes saw nothing yet: let one pass.
            seen = {await api.last_evaluation()}
            await until(lambda: _new_evaluation(api, seen), what="an evaluation after the scrapes")
            for _ in range(QUIET_EVALUATIONS):
                await until(lambda: _new_evaluation(api, seen), what="the next evaluation")
                assert await api.active() == [], "an alert with everything healthy"

            # The worker stops; callbacks keep coming and wait in the work queue.
            await stack.worker.stop()
            for _ in range(BACKLOG):
                body = signed(callback())
                assert await post_fresh(f"{stack.ingress_url}{settings.path}", body) == 200

            async def backlog_pending() -> bool:
                return ("CallbackSinkBacklogWithoutConsumers", "pending",) in {
                    (name, state) for name, state, _ in await api.active()
                }  # fmt: skip

            await until(backlog_pending, what="CallbackSinkBacklogWithoutConsumers pending")
            depths = QueueDepths(settings, QueueMetrics(CollectorRegistry()))
            try:
                real = (await depths.poll())["work"]
            finally:
                await depths.close()
            assert real == BACKLOG

            async def panel_shows_the_depth() -> bool:
                found = {r["metric"].get("queue"): r["value"][1] for r in
                         await api.query(queue_panel_expr())}  # fmt: skip
                return found.get("work") == str(real)

            await until(panel_shows_the_depth, what=f"the queue panel to show {real} in work")

            # The ingress goes away: its target stops answering.
            await stack.ingress.stop()

            async def ingress_down_pending() -> bool:
                return any(
                    name == "CallbackSinkIngressDown" and state == "pending"
                    and labels["instance"] == ingress_target
                    for name, state, labels in await api.active()
                )  # fmt: skip

            await until(ingress_down_pending, what="CallbackSinkIngressDown pending")


async def _new_evaluation(api: PromAPI, seen: set[str]) -> bool:
    last = await api.last_evaluation()
    if last in seen:
        return False
    seen.add(last)
    return True
