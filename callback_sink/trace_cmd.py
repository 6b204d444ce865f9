"""``callback-sink trace CALLID [LOGFILE…]``: what happened to one callback, from the logs.

This is the answer to "what happened to callId X": it reads the JSON log lines
(``SINK_LOG_FORMAT=json``, the default) of ingresses, workers and ``dlq replay``, from the
files named or from standard input, keeps those about the callback and prints its life in
time order, one step a row: accepted or refused at the ingress, every handler run with its
outcome and attempt (``ok``, ``duplicate``, ``retry``, ``dead_letter``, ``deferred``,
``forged``), the replay that put a dead letter back, and the runs of that replay (marked
``replay``). ``--json`` prints the same steps as one JSON object per line.

Lines are matched tolerantly: every line about the callback (its ``call_id``, or the
``message_id`` of an undecodable message) is a step; a worker line's step is its ``outcome``
field (the older words ``failed`` and ``dead`` read as ``retry`` and ``dead_letter``), any
other line's is named after its event (:data:`STEPS`), or is the event name itself. Anything
before the first ``{`` of a line (a container runtime's prefix) is skipped, and so are lines
that are not JSON.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from callback_sink.errors_cli import Failure
from callback_sink.sink.outcomes import Outcome
from callback_sink.sink.settings import Settings

#: A worker line's ``outcome`` is its step (:class:`~callback_sink.sink.outcomes.Outcome`);
#: the words of older logs are read as the ones that replaced them.
OUTCOMES = {"failed": Outcome.RETRY.value, "dead": Outcome.DEAD_LETTER.value}
#: The step of a line without an ``outcome`` field, by its event name.
STEPS = {
    "callback.accepted": "accepted",
    "callback.rejected": "refused",
    "spool.full": "refused",
    "callback.forged": "forged",
    "callback.delivery_limit": "dead_letter",
    "callback.crash_loop": "dead_letter",
    "callback.undecodable": "dead_letter",
    "callback.deferred": "deferred",
    "dlq.replayed": "replayed",
}
#: Fields shown in the DETAIL column when a line has them, in this order.
DETAIL_FIELDS = ("status", "reason", "error", "replay_of", "first_seen_as", "deliveries", "deaths")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trace`` to the ``callback-sink`` parser."""
    p = sub.add_parser(
        "trace",
        help="what happened to one callback: its steps (accepted, each handler run, retries, "
        "dead letter, replay) from JSON log lines",
    )
    p.add_argument("call_id", help="the callback's callId")
    p.add_argument("logfile", nargs="*", help="log files, in any order ('-' or none: stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object per step")
    p.set_defaults(command=_trace)


@dataclass(frozen=True)
class TraceStep:
    """One row of a callback's life."""

    time: str
    step: str
    handler: str | None = None
    attempt: int | None = None
    replay: bool = False
    detail: str = ""
    #: The log line's own event name, for a reader who wants to grep for it.
    event: str = ""


def step_of(line: dict[str, Any]) -> TraceStep:
    """The step a log line about the callback stands for."""
    event = str(line.get("event", "?"))
    outcome = line.get("outcome")
    # A worker line about a handler's (or a whole delivery's) fate carries its outcome.
    name = OUTCOMES.get(outcome, outcome) if isinstance(outcome, str) else STEPS.get(event, event)
    attempt = line.get("attempt")
    handlers = line.get("handlers")
    many = ",".join(map(str, handlers)) if isinstance(handlers, list) and handlers else None
    return TraceStep(
        time=str(line.get("timestamp", "")),
        step=name,
        handler=line.get("handler") or many,
        attempt=attempt if isinstance(attempt, int) else None,
        replay=line.get("replay") is True,
        detail=_detail(event, line),
        event=event,
    )


def _detail(event: str, line: dict[str, Any]) -> str:
    parts = []
    for key in DETAIL_FIELDS:
        value = line.get(key)
        if value is None or value == "":
            continue
        if key == "error" and line.get("error_type"):
            value = f"{line['error_type']}: {value}"
        elif key == "replay_of":
            value = f"of {value}"
        elif key in ("first_seen_as", "deliveries"):
            value = f"{key.replace('_', ' ')}: {value}"
        parts.append(str(value))
    if event == "callback.accepted" and line.get("durable"):
        parts.append(f"durable: {line['durable']}")
    return ", ".join(parts)


def matching(call_id: str, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON log lines about ``call_id`` among ``lines``."""
    for raw in lines:
        if call_id not in raw:  # cheap: most lines are about other callbacks
            continue
        start = raw.find("{")
        try:
            doc = orjson.loads(raw[start:]) if start >= 0 else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and call_id in (doc.get("call_id"), doc.get("message_id")):
            yield doc


def life(call_id: str, sources: Iterable[Iterable[str]]) -> list[TraceStep]:
    """Every step of ``call_id`` found in ``sources`` (the lines of each log), oldest first.
    Lines keep their order within a source; sources are merged by timestamp."""
    found = [
        (str(doc.get("timestamp", "")), index, order, doc)
        for index, lines in enumerate(sources)
        for order, doc in enumerate(matching(call_id, lines))
    ]
    found.sort(key=lambda row: row[:3])
    return [step_of(doc) for *_, doc in found]


def table(call_id: str, steps: list[TraceStep]) -> str:
    """The steps as a short table under a one-line heading."""
    date = steps[0].time[:10] if steps and "T" in steps[0].time else ""
    rows = [("TIME", "STEP", "HANDLER", "ATT", "DETAIL")]
    for s in steps:
        clock = s.time.split("T", 1)[-1].rstrip("Z")[:12] if s.time else "?"
        step = f"{s.step} (replay)" if s.replay else s.step
        attempt = "-" if s.attempt is None else str(s.attempt)
        rows.append((clock, step, s.handler or "-", attempt, s.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"callId {call_id}: {len(steps)} step(s)" + (f", {date} UTC" if date else "")]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


def _sources(paths: list[str]) -> Iterator[Iterable[str]]:
    for path in paths or ["-"]:
        if path == "-":
            yield sys.stdin
        else:
            with Path(path).open(encoding="utf-8", errors="replace") as lines:
                yield lines


def _trace(args: argparse.Namespace, settings: Settings) -> int:
    steps = life(args.call_id, _sources(args.logfile))
    if not steps:
        where = ", ".join(args.logfile) or "standard input"
        raise Failure(f"no JSON log line about call id {args.call_id} in {where}")
    if args.json:
        for step in steps:
            sys.stdout.write(orjson.dumps(asdict(step)).decode() + "\n")
    else:
        print(table(args.call_id, steps))
    return 0
