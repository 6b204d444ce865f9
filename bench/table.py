"""The one table (Markdown, on standard output) and the JSON file with every round's figures."""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
from common import RSS_TARGET_MIB, SINK_ROWS, Config, Result
from ratios import CHECKS, all_clean, median, noisy, other_cpu, verdict

ROWS = [
    ("noop", "aiohttp no-op handler (HTTP ceiling)", "req/s"),
    ("bare-pub-1p", "bare aio-pika confirmed publisher, 1 process", "msg/s"),
    ("bare-pub-2p", "bare aio-pika confirmed publisher, 2 processes", "msg/s"),
    ("ingress-1p-info", "callback-sink ingress, 1 process, info logs", "req/s"),
    ("ingress-1p-warning", "callback-sink ingress, 1 process, warning logs", "req/s"),
    ("ingress-2p-info", "callback-sink ingress, 2 processes, info logs", "req/s"),
    ("celery", "FastAPI + Celery .delay(), 2 uvicorn workers, no confirms", "req/s"),
    ("celery-confirm", "FastAPI + Celery .delay(), 2 uvicorn workers, confirm_publish", "req/s"),
    ("faststream-1w", "FastAPI + FastStream, confirmed publish, 1 uvicorn worker", "req/s"),
    ("faststream-2w", "FastAPI + FastStream, confirmed publish, 2 uvicorn workers", "req/s"),
    ("bare-consume", "bare consume + ack", "msg/s"),
    ("bare-consume-setnx", "bare consume + ack + Redis SET NX", "msg/s"),
    ("drain-memory", "callback-sink worker drain, memory dedup", "cb/s"),
    ("drain-redis", "callback-sink worker drain, Redis dedup", "cb/s"),
    ("drain-ordered", "worker drain, ordered (16 partitions), Redis dedup", "cb/s"),
    ("e2e", "end to end max: ingress + worker (Redis dedup)", "cb/s"),
]


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:.2f}{unit}" if abs(value) < 10 else f"{value:.1f}{unit}"


def e2e_label(label: str, rs: list[Result]) -> str:
    """The end-to-end row's label with the number of ingress processes it used."""
    used = [r.extra["ingress_processes"] for r in rs if "ingress_processes" in r.extra]
    if not used:
        return label
    counts = "/".join(str(n) for n in sorted(set(used)))
    processes = "process" if set(used) == {1} else "processes"
    return label.replace("ingress +", f"ingress ({counts} {processes}) +")


def counts(rs: list[Result]) -> tuple[str, str, str]:
    def total(attr: str) -> str:
        values = [getattr(r, attr) for r in rs if getattr(r, attr) is not None]
        return str(sum(values)) if values else "–"

    return total("non_200"), total("lost"), total("twice")


def summarize(results: dict[str, list[Result]], config: Config) -> tuple[str, dict[str, Any]]:
    """The one table, and its figures for the JSON file."""
    lines = [
        "| # | what | generator | median | range | p50 / p99 ms | target | verdict "
        "| non-200 | lost | twice | peak RSS MiB | other CPU % |",
        "|--:|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    summary: dict[str, Any] = {"rows": {}, "ratios": {}}
    n = 0
    for key, label, unit in ROWS:
        rs = results.get(key)
        if not rs:
            continue
        if key == "e2e":
            label = e2e_label(label, rs)
        n += 1
        values = [r.value for r in rs]
        med = median(values)
        finite = [v for v in values if v == v]
        spread = f"{fmt(min(finite))}–{fmt(max(finite))}" if len(finite) > 1 else ""
        lat = ""
        if rs[0].p50_ms is not None:
            p50 = median([r.p50_ms or 0 for r in rs])
            lat = f"{p50:.1f} / {median([r.p99_ms or 0 for r in rs]):.1f}"
        rss = max((mib for r in rs for mib in r.peak_rss_mib.values()), default=0.0)
        non_200, lost, twice = counts(rs)
        other = other_cpu(rs)
        lines.append(
            f"| {n} | {label} | {rs[0].generator} | {fmt(med, ' ' + unit)} | {spread} | {lat} "
            f"| | | {non_200} | {lost} | {twice} | {rss:.0f} | {other:.0f} |"
        )
        summary["rows"][key] = {"label": label, "unit": unit, "median": med, "values": values}
        if key == "e2e":
            n = e2e_levels(rs, config, n, lines, summary)

    for check in CHECKS:
        values = check.values(results)
        med = median(values)
        known = med == med
        shown = check.shown(med) if known else "n/a"
        ok = check.ok(med) if known else None
        n += 1
        lines.append(
            f"| {n} | {check.label} | same round | {shown} | {check.spread(values)} | "
            f"| {check.target} | {verdict(ok, known and check.noise(results, med))} | | | | | |"
        )
        summary["ratios"][check.label] = {"median": med, "values": values, "target": check.target}
    # The target holds in every round, not in the median one: the worst round is the figure.
    every = summary["rows"].get("e2e-50%", {}).get("p99_ms_every_round") or [float("nan")]
    p99_50 = max(every)
    known = p99_50 == p99_50
    spread = f"{min(every):.1f}–{max(every):.1f}" if known and len(every) > 1 else ""
    n += 1
    lines.append(
        f"| {n} | end-to-end p99 at 50 % of max, worst round | open loop | {fmt(p99_50, ' ms')} "
        f"| {spread} | | < 50 ms "
        f"| {verdict(p99_50 < 50 if known else None, noisy(results, 'e2e'))} | | | | | |"
    )
    n = reference_row(results, n, lines, summary)
    sink_rss = [
        mib for key in SINK_ROWS for r in results.get(key, []) for mib in r.peak_rss_mib.values()
    ]
    top = max(sink_rss, default=float("nan"))
    n += 1
    lines.append(
        f"| {n} | peak RSS of any callback-sink process | VmHWM | {fmt(top * 2**20 / 1e6, ' MB')} "
        f"| | | < 150 MB | {verdict(None if top != top else top < RSS_TARGET_MIB)} | | | | | |"
    )
    clean = all_clean(results)
    n += 1
    lines.append(
        f"| {n} | every run: non-200, lost, twice | counted | "
        f"{'all 0' if clean else 'NOT all 0'} | | | 0 / 0 / 0 | {verdict(clean)} | | | | | |"
    )
    summary["peak_rss_mib_sink"] = top
    summary["e2e_p99_at_50"] = p99_50
    summary["clean"] = clean
    return "\n".join(lines), summary


def e2e_levels(
    rs: list[Result], config: Config, n: int, lines: list[str], summary: dict[str, Any]
) -> int:
    """The open-loop levels below the end-to-end maximum: one row each; the last row number."""
    for level in config.levels:
        name = f"{level:.0%}"
        lv = [r.extra["levels"][name] for r in rs if name in r.extra.get("levels", {})]
        p50 = median([v["e2e_ms"]["p50"] or float("nan") for v in lv])
        p99 = median([v["e2e_ms"]["p99"] or float("nan") for v in lv])
        sent = median([v["sent_rate"] for v in lv])
        lag = median([v["send_lag_ms"]["p99"] or 0 for v in lv])
        cpu = median([v["sender_cpu_percent"] for v in lv])
        cores = median([v.get("machine_cores", float("nan")) for v in lv])
        n += 1
        lines.append(
            f"| {n} | end to end at {name} of max | open loop, Python (lag p99 "
            f"{lag:.1f} ms, {cpu:.0f} % CPU; machine {cores:.2f} cores busy) | "
            f"{fmt(sent, ' cb/s')} | | "
            f"{p50:.1f} / {p99:.1f} | | | | | | | |"
        )
        every = [v["e2e_ms"]["p99"] or float("nan") for v in lv]
        summary["rows"][f"e2e-{name}"] = {
            "sent_rate": sent, "p50_ms": p50, "p99_ms": p99, "p99_ms_every_round": every,
            "machine_cores": cores,
        }  # fmt: skip
    return n


def reference_row(
    results: dict[str, list[Result]], n: int, lines: list[str], summary: dict[str, Any]
) -> int:
    """The end-to-end row's bare reference (levels.py): the same path with no sink code, at
    the 50 % level's rate, worst round; no target of its own (its verdict cell says whether
    it, too, is over the sink's)."""
    runs = [r.extra["reference"] for r in results.get("e2e", []) if "reference" in r.extra]
    if not runs:
        return n
    every = [ref["e2e_ms"]["p99"] for ref in runs if "e2e_ms" in ref and ref["e2e_ms"]["p99"]]
    worst = max(every) if every else float("nan")
    cores = median([ref["machine_cores"] for ref in runs if "machine_cores" in ref])
    spread = f"{min(every):.1f}–{worst:.1f}" if len(every) > 1 else ""
    non_200 = sum(ref.get("non_200", 0) for ref in runs)
    lost = sum(ref.get("lost", 0) for ref in runs)
    twice = sum(ref.get("twice", 0) for ref in runs)
    failed = sum(1 for ref in runs if "failed" in ref)
    said = "n/a" if math.isnan(worst) else ("also ≥ 50 ms" if worst >= 50 else "< 50 ms")
    if failed:
        said += f" ({failed} round(s) failed)"
    n += 1
    lines.append(
        f"| {n} | its bare reference: aiohttp + confirmed publish, consume + SET NX, same rate, "
        f"worst round (machine {cores:.2f} cores busy) | open loop | {fmt(worst, ' ms')} "
        f"| {spread} | | reference | {said} | {non_200} | {lost} | {twice} | | |"
    )
    summary["e2e_reference_p99_at_50"] = worst
    summary["rows"]["e2e-reference"] = {"p99_ms_every_round": every, "machine_cores": cores}
    return n


def wakeups(machine: dict[str, Any]) -> str:
    """What a lone wake-up costs here (wakeup.py), or nothing when it was not measured."""
    echo = machine.get("echo_cpu_us") or {}
    if not echo:
        return ""
    at = ", ".join(f"{us:g} us at {rate}" for rate, us in echo.items())
    return f"socket echo CPU per message {at}; "


def header(mode: str, config: Config, machine: dict[str, Any], multi: bool, elapsed: float) -> str:
    return (
        f"callback-sink bench ({mode}): {config.rounds} interleaved round(s), medians; "
        f"{machine['cpus']} CPUs, Python {machine['python']}, RabbitMQ {machine['rabbitmq']}, "
        f"Redis {machine['redis']}, {machine['wrk']}; loop {machine['loop_available']}; "
        f"{wakeups(machine)}"
        f"{config.duration:g} s per throughput row, {config.connections} connections; "
        f"ingress --processes {'yes' if multi else 'no'}; {elapsed:.0f} s in all"
    )


def write_json(
    results_dir: Path,
    mode: str,
    config: Config,
    machine: dict[str, Any],
    elapsed: float,
    multi: bool,
    summary: dict[str, Any],
    table: str,
    results: dict[str, list[Result]],
) -> Path:
    """``bench-{mode}-<UTC time>.json`` in ``results_dir``: everything the run measured."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = results_dir / f"bench-{mode}-{stamp}.json"
    path.write_bytes(
        orjson.dumps(
            {
                "mode": mode,
                "config": asdict(config),
                "machine": machine,
                "load_after": os.getloadavg(),
                "seconds": elapsed,
                "ingress_processes_option": multi,
                "summary": summary,
                "table": table,
                "results": {k: [asdict(r) for r in v] for k, v in results.items()},
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    return path
