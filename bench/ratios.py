"""The targets: each comparison of two rows as a ratio taken inside each round, its target and
its verdict, and when a verdict deserves a "(noise?)" mark."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from common import Result

#: "Other CPU %" (the rest of the machine, % of one core) above which a row's figure was taken
#: on a busy machine: a verdict that compares such a row gets the mark below.
NOISY_OTHER_CPU = 25.0
NOISE_MARK = "(noise?)"


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def ratio(results: dict[str, list[Result]], a: str, b: str) -> list[float]:
    """Per-round ratios a/b (rounds where both ran)."""
    pairs = zip(results.get(a, []), results.get(b, []), strict=False)
    return [x.value / y.value for x, y in pairs if y.value and x.value == x.value]


def other_cpu(rs: list[Result]) -> float:
    """The median over rounds of what the rest of the machine used during a row (% of a core),
    as its "other CPU %" column shows it."""
    return median([r.extra.get("cpu_percent", {}).get("other", float("nan")) for r in rs])


def noisy(results: dict[str, list[Result]], *keys: str) -> bool:
    """Whether any of these rows ran while the rest of the machine used over 25 % of a core."""
    return any(other_cpu(results.get(key, [])) > NOISY_OTHER_CPU for key in keys)


def verdict(ok: bool | None, noise: bool = False) -> str:
    if ok is None:
        return "n/a"
    shown = "PASS" if ok else "MISS"
    return f"{shown} {NOISE_MARK}" if noise else shown


@dataclass(frozen=True)
class Check:
    """One comparison: ``a / b`` per round (``1 − a / b`` when ``cost``), against a target."""

    label: str
    a: str
    b: str
    target: str
    ok: Callable[[float], bool]
    cost: bool = False  # a share in %: a cost below zero (a faster with than without) is noise

    def values(self, results: dict[str, list[Result]]) -> list[float]:
        values = ratio(results, self.a, self.b)
        return [1 - x for x in values] if self.cost else values

    def shown(self, value: float) -> str:
        return f"{value:.1%}" if self.cost else f"{value:.2f}×"

    def spread(self, values: list[float]) -> str:
        if len(values) <= 1:
            return ""
        if self.cost:
            return f"{min(values):.1%}–{max(values):.1%}"
        return f"{min(values):.2f}–{max(values):.2f}"

    def noise(self, results: dict[str, list[Result]], value: float) -> bool:
        """Mark the verdict when a compared row ran on a busy machine, or when the figure
        itself cannot be true (a negative cost)."""
        return noisy(results, self.a, self.b) or (self.cost and value < 0)


CHECKS = [
    Check(
        "ingress 1p / bare publisher 1p",
        "ingress-1p-info",
        "bare-pub-1p",
        "≥ 0.6",
        lambda v: v >= 0.6,
    ),
    Check(
        "ingress 2p / bare publisher 2p",
        "ingress-2p-info",
        "bare-pub-2p",
        "≥ 0.8",
        lambda v: v >= 0.8,
    ),
    Check(
        "ingress 2p / FastAPI+Celery, no confirms",
        "ingress-2p-info",
        "celery",
        "≥ 2",
        lambda v: v >= 2,
    ),
    Check(
        "ingress 2p / FastAPI+Celery, confirm_publish",
        "ingress-2p-info",
        "celery-confirm",
        "≥ 5",
        lambda v: v >= 5,
    ),
    Check(
        "ingress 1p / FastAPI+FastStream, 1 worker",
        "ingress-1p-info",
        "faststream-1w",
        "≥ 1.5",
        lambda v: v >= 1.5,
    ),
    Check(
        "ingress 2p / FastAPI+FastStream, 2 workers",
        "ingress-2p-info",
        "faststream-2w",
        "≥ 1.5",
        lambda v: v >= 1.5,
    ),
    Check(
        "info-log cost: 1 − info / warning (1 process)",
        "ingress-1p-info",
        "ingress-1p-warning",
        "≤ 10 %",
        lambda v: v <= 0.10,
        cost=True,
    ),
    Check(
        "worker drain Redis / bare consume + SET NX",
        "drain-redis",
        "bare-consume-setnx",
        "≥ 0.8",
        lambda v: v >= 0.8,
    ),
    Check(
        "worker drain memory / bare consume",
        "drain-memory",
        "bare-consume",
        "≥ 0.9",
        lambda v: v >= 0.9,
    ),
]


def all_clean(results: dict[str, list[Result]]) -> bool:
    return all(
        not r.non_200 and not r.lost and not r.twice and "failed" not in r.extra
        for rs in results.values()
        for r in rs
    )
