"""The benchmark's figures for one dedup store, and the Markdown tables they print as."""

from __future__ import annotations

from dataclasses import dataclass

import procs
import traffic

CPU_ROLES = ("ingress", "worker", "client", *procs.SERVICES, "other")


@dataclass(frozen=True)
class Row:
    dedup: str
    together: traffic.Load  # phase 1: ingress and worker running
    handled_at: float  # monotonic time the worker handled phase 1's last callback
    alone: traffic.Load  # phase 2: ingress only, callbacks left in the queue
    backlog_rate: float  # phase 3: a fresh worker on that backlog, callbacks/s
    handled: int  # callbacks the handlers saw, all phases and the warm-up
    distinct: int  # ... counted once per dedup key
    expected: int  # callbacks accepted, all phases and the warm-up
    left_in_queues: int  # work + dead queue once the workers stopped: must be 0
    ingress: procs.Memory  # at the end of phase 1
    worker: procs.Memory  # at the end of phase 1
    cpu: dict[str, float]  # phase 1, share of one core by role (see procs.cpu_percent)
    other_cpu: tuple[float, float, float]  # CPU % of the rest of the machine, by phase

    @property
    def end_to_end_rate(self) -> float:
        """Phase 1 callbacks per second, from the first request to the last handled."""
        return self.together.accepted / max(self.handled_at - self.together.started, 1e-9)

    def problems(self) -> list[str]:
        found = []
        refused = self.together.refused + self.alone.refused
        if refused:
            found.append(f"{refused} callbacks refused")
        if self.handled != self.distinct:
            found.append(f"{self.handled - self.distinct} callbacks handled more than once")
        if self.distinct != self.expected:
            found.append(f"handled {self.distinct} callbacks but {self.expected} were accepted")
        if self.left_in_queues:
            found.append(f"{self.left_in_queues} messages left in the work and dead queues")
        return found


def tables(rows: list[Row], concurrency: int) -> str:
    """Throughput and latency, then memory and CPU, as Markdown."""
    lines = [
        "| dedup | phase | callbacks | ingress req/s | p50 ms | p95 ms | p99 ms | refused "
        "| worker callbacks/s | other CPU % ³ |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        together, alone, backlog = (f"{other:.0f}" for other in r.other_cpu)
        e2e = f"{r.end_to_end_rate:,.0f} ¹"
        lines.append(_load_row(r.dedup, "together", r.together, e2e, together))
        lines.append(_load_row(r.dedup, "ingress alone", r.alone, "-", alone))
        lines.append(f"| {r.dedup} | backlog, worker alone | {r.alone.accepted} | - | - | - | - "
                     f"| - | {r.backlog_rate:,.0f} ² | {backlog} |")  # fmt: skip
    lines += [
        "",
        f"{concurrency} client connections. ¹ end to end: from the first request until the "
        "worker handled the last callback. ² from the first handled callback to the last. "
        "³ CPU used meanwhile by processes that are not part of the benchmark, in % of one "
        "core: anything above a few % means something else ran on these cores and skewed "
        "that row.",
        "",
        "| dedup | handled / distinct / accepted | left in queues | ingress RSS MiB (peak) "
        "| worker RSS MiB (peak) | " + " | ".join(f"CPU % {role}" for role in CPU_ROLES) + " |",
        "|---|--:|--:|--:|--:|" + "--:|" * len(CPU_ROLES),
    ]
    for r in rows:
        lines.append(
            f"| {r.dedup} | {r.handled} / {r.distinct} / {r.expected} | {r.left_in_queues} "
            f"| {r.ingress.rss_mib:.1f} ({r.ingress.peak_mib:.1f}) "
            f"| {r.worker.rss_mib:.1f} ({r.worker.peak_mib:.1f}) | "
            + " | ".join(f"{r.cpu[role]:.0f}" for role in CPU_ROLES)
            + " |"
        )
    lines += [
        "",
        "Memory and CPU: phase 1 (together). CPU is the share of one core from the first "
        "request to the last handled callback; 'client' is this benchmark's load generator, "
        "'other' the rest of the machine.",
    ]
    return "\n".join(lines)


def _load_row(dedup: str, phase: str, load: traffic.Load, worker: str, other: str) -> str:
    return (
        f"| {dedup} | {phase} | {load.accepted + load.refused} | {load.rate:,.0f} "
        f"| {load.percentile(50):.1f} | {load.percentile(95):.1f} | {load.percentile(99):.1f} "
        f"| {load.refused} | {worker} | {other} |"
    )
