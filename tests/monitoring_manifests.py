"""deploy/k8s/monitoring's generated manifests: the PrometheusRule carries the groups of
deploy/prometheus/alerts.yaml, the dashboard ConfigMap the JSON of
deploy/grafana/dashboards/callback-sink.json. tests/test_k8s.py fails when either file is not
what this renders from its source; regenerate both with::

    .venv/bin/python -m tests.monitoring_manifests
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.processes import ROOT

MONITORING = ROOT / "deploy" / "k8s" / "monitoring"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "callback-sink.json"
RULE_FILE = MONITORING / "prometheusrule.yaml"
DASHBOARD_FILE = MONITORING / "dashboard.yaml"
LABELS = {"app.kubernetes.io/name": "callback-sink", "app.kubernetes.io/component": "monitoring"}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (the dashboard JSON stays readable)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(header: str, doc: dict[str, Any]) -> str:
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


def render_rule() -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "callback-sink", "labels": dict(LABELS)},
        "spec": {"groups": groups},
    }
    header = (
        "# GENERATED from deploy/prometheus/alerts.yaml by\n"
        "# `python -m tests.monitoring_manifests`; edit that file, not this one. Runbooks:\n"
        "# docs/runbooks.md. Your Prometheus's\n"
        "# ruleSelector must match these labels (kube-prometheus-stack selects `release: <name>`\n"
        "# by default: add it in kustomization.yaml's labels).\n"
    )
    return _dump(header, doc)


def render_dashboard() -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "callback-sink-dashboard",
            # Grafana's dashboard sidecar (kube-prometheus-stack, the grafana chart) loads every
            # ConfigMap with this label; the annotation names the folder it goes to.
            "labels": {**LABELS, "grafana_dashboard": "1"},
            "annotations": {"grafana_folder": "callback-sink"},
        },
        "data": {"callback-sink.json": DASHBOARD.read_text(encoding="utf-8")},
    }
    header = (
        "# GENERATED from deploy/grafana/dashboards/callback-sink.json by\n"
        "# `python -m tests.monitoring_manifests`; edit that file, not this one.\n"
    )
    return _dump(header, doc)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    write(RULE_FILE, render_rule())
    write(DASHBOARD_FILE, render_dashboard())
