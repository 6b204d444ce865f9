"""``docs/reference/metrics.md``: every metric the sink exports, and every alert rule.

The metrics are read from their groups themselves (every subclass of the ``_Group`` of
:mod:`callback_sink.sink.metrics`, wherever it is declared): each is declared on a registry
of its own and the registry is asked what it holds (name, type, help, labels), so nothing here
restates them. The alerts come from
``deploy/prometheus/alerts.yaml``, the file Prometheus loads.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from callback_sink.docs_gen.markdown import HEADER, cell, code
from callback_sink.sink import metrics

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "callback_sink"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
#: What the exposition adds to a family's name, by type.
SUFFIX = {"counter": "_total", "gauge": "", "histogram": "", "info": "_info"}
#: Labels the exposition adds by itself, not the sink's own.
BUILT_IN_LABELS = {"le", "quantile"}


def every_metric() -> list[tuple[str, str, tuple[str, ...], str, str]]:
    """Every metric of the sink: exposed name, type, labels, help, the group declaring it."""
    found: dict[str, tuple[str, str, tuple[str, ...], str, str]] = {}
    groups = metric_groups()
    for group in groups:
        registry = CollectorRegistry()
        declared = group(registry)
        if isinstance(declared, metrics.WorkerMetrics):
            declared.bind(["<handler>"])  # its labelled series exist once a handler is loaded
        for family in registry.collect():
            labels: list[str] = []
            for sample in family.samples:
                labels += [k for k in sample.labels if k not in BUILT_IN_LABELS | {*labels}]
            name = family.name + SUFFIX.get(family.type, "")
            found.setdefault(
                name, (name, family.type, tuple(labels), family.documentation, group.__name__)
            )
    return sorted(found.values())


#: A metric group's declaration in a module's source.
_GROUP = re.compile(r"^class \w+\((?:metrics\.)?_Group\)", re.M)


def metric_groups() -> list[type[Any]]:
    """Every metric group of the package: the modules declaring one are imported, then
    ``_Group``'s subclasses listed, those others build on first (so that a metric is credited
    to the group declaring it)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if _GROUP.search(path.read_text(encoding="utf-8")):
            relative = path.relative_to(PACKAGE).with_suffix("")
            importlib.import_module(".".join(("callback_sink", *relative.parts)))
    found: list[type[Any]] = []
    pending: list[type[Any]] = [metrics._Group]
    while pending:
        for sub in pending.pop(0).__subclasses__():
            if sub not in found:
                found.append(sub)
                pending.append(sub)
    first = [metrics.BuildInfo, metrics.QueueMetrics]
    return first + sorted((g for g in found if g not in first), key=lambda g: g.__name__)


def alerts() -> list[dict[str, Any]]:
    """The alert rules of ``deploy/prometheus/alerts.yaml``, in file order."""
    import yaml  # type: ignore[import-untyped]  # a dev dependency: only docs_gen needs it

    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def markdown() -> str:
    out = [
        "# Metrics and alerts",
        "",
        HEADER,
        "",
        "Every process serves Prometheus metrics on `GET /metrics`: an ingress on `SINK_PORT`, "
        "a worker on `SINK_WORKER_PORT` (see [HTTP endpoints](http.md)). Every series exists, "
        "at 0, from the start of its process. What each one tells an operator, and how to "
        "aggregate them, is in [Operating it](../howto/operate.md).",
        "",
        "## Metrics",
        "",
        "| metric | type | labels | help | declared by |",
        "|---|---|---|---|---|",
    ]
    for name, kind, labels, documentation, group in every_metric():
        shown = ", ".join(code(label) for label in labels)
        out.append(f"| {code(name)} | {kind} | {shown} | {cell(documentation)} | `{group}` |")
    out += [
        "",
        "Besides these, each process exports the standard `process_*` metrics of "
        "prometheus_client (CPU, memory, file descriptors, start time); a multi-process "
        "ingress sums them over its live children.",
        "",
        "## Alerts",
        "",
        "The rules of `deploy/prometheus/alerts.yaml` (the same groups are in "
        "`deploy/k8s/monitoring/prometheusrule.yaml`). Each links to its runbook: what it "
        "means, what to check, how to fix.",
        "",
        "| alert | severity | for | expression | summary | runbook |",
        "|---|---|---|---|---|---|",
    ]
    for rule in alerts():
        anchor = str(rule["annotations"]["runbook_url"]).partition("#")[2]
        out.append(
            f"| `{rule['alert']}` | {rule['labels']['severity']} | {rule.get('for', '')} "
            f"| {code(str(rule['expr']))} | {cell(str(rule['annotations']['summary']))} "
            f"| [runbook](../runbooks.md#{anchor}) |"
        )
    return "\n".join(out) + "\n"
